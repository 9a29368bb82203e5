"""The README's capability matrix is the one the adapters declare."""

from pathlib import Path

from cti.adapters.matrix import capability_matrix

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_matrix_matches_the_adapters_declarations() -> None:
    text = README.read_text()
    start = text.index("<!-- capability-matrix:start -->") + len("<!-- capability-matrix:start -->\n")
    end = text.index("<!-- capability-matrix:end -->")
    assert text[start:end].strip() == capability_matrix().strip(), "run: python -m cti.adapters.matrix"
