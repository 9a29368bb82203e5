"""`cti transcribe`: JSON lines per file, exit code 2 on bad files (the others still done)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from cti.config import TranscribeSettings
from tests.transcribe.conftest import DATA, clip


def test_json_lines_and_exit_code_two_for_bad_files(recognizer, tmp_path: Path) -> None:
    from cti.transcribe.cli import transcribe_files

    good = clip(DATA / "c05_sales_quote_followup.stereo.wav", tmp_path / "quote.wav", 23.0, 26.2, subtype="ULAW")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    out, err = io.StringIO(), io.StringIO()
    code = transcribe_files([str(tmp_path / "missing.wav"), str(corrupt), str(good)], as_json=True, summary=True,
                            settings=TranscribeSettings(), console=Console(file=err, width=200), out=out,
                            recognizer=recognizer)
    assert code == 2
    assert "missing.wav: no such file" in err.getvalue()
    assert "corrupt.wav: not a readable audio file" in err.getvalue()
    # the last line names the failed files again: the per-file errors scroll away in a batch
    assert "2 of 3 file(s) could not be transcribed" in err.getvalue()
    last = err.getvalue().split("could not be transcribed")[-1]
    assert "missing.wav" in last and "corrupt.wav" in last and "quote.wav" not in last
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert set(obj) == {"file", "text", "segments", "summary"}
    assert obj["file"] == str(good)
    assert "friday" in obj["text"].lower()
    assert set(obj["segments"][0]) == {"start", "end", "speaker", "text"}
    assert obj["segments"][0]["speaker"] == "agent"
    items = obj["summary"]["action_items"]
    assert items and items[0]["owner"] == "agent" and items[0]["due"] == "Friday"
    assert {"key_points", "action_items", "disposition", "sentiment"} <= set(obj["summary"])


def test_text_output_and_success_code(recognizer, tmp_path: Path) -> None:
    from cti.transcribe.cli import transcribe_files

    good = clip(DATA / "c03_router_support.stereo.wav", tmp_path / "r.wav", 25.0, 30.0)
    out = io.StringIO()
    code = transcribe_files([str(good)], as_json=False, summary=False, settings=TranscribeSettings(),
                            console=Console(file=io.StringIO()), out=out, recognizer=recognizer)
    assert code == 0
    text = out.getvalue()
    assert text.startswith(f"== {good}") and "agent:" in text and "-- summary" not in text


def test_unavailable_model_exits_one_with_the_package_to_install() -> None:
    from cti.transcribe.cli import transcribe_files

    err = io.StringIO()
    code = transcribe_files(["x.wav"], as_json=True, summary=False, settings=TranscribeSettings(model="medium"),
                            console=Console(file=err, width=300), out=io.StringIO())
    assert code == 1 and "not available offline" in err.getvalue()


def test_channels_option_names_who_is_left_and_refuses_what_it_cannot_read(recognizer, tmp_path: Path) -> None:
    import soundfile as sf

    from cti.cli import main
    from cti.transcribe.cli import transcribe_files

    data, sr = sf.read(str(DATA / "c02_delivery_delay.stereo.wav"), always_2d=True)
    swapped = tmp_path / "customer-left.wav"
    sf.write(str(swapped), data[int(8.5 * sr): int(13.3 * sr), ::-1], sr)
    out = io.StringIO()
    code = transcribe_files([str(swapped)], as_json=True, summary=False, settings=TranscribeSettings(),
                            console=Console(file=io.StringIO()), out=out, recognizer=recognizer,
                            speakers=("customer", "agent"))
    assert code == 0
    segments = json.loads(out.getvalue())["segments"]
    assert [s["speaker"] for s in segments if "order number" in s["text"].lower()] == ["agent"]
    assert main(["transcribe", "--channels", "left,right", str(swapped)]) == 2
