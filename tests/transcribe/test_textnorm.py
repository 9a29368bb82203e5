"""Number forms compare equal after normalization (WER and key facts rely on it)."""

from __future__ import annotations

import pytest

from cti.transcribe.textnorm import normalize, wer


@pytest.mark.parametrize(("a", "b"), [
    ("Order 58213.", "order five eight two one three"),
    ("Order 58213.", "Order 5-8-2-1-3"),
    ("$12,500 for 25 desks", "twelve thousand five hundred dollars for twenty-five desks"),
    ("July 15th", "July fifteenth"),
    ("at 10 am", "at ten a.m."),
    ("$86.40", "eighty-six dollars and forty cents"),
    ("$86.40", "$86 and $0.40"),
    ("It's 4719203.", "its four seven one nine two oh three"),
    ("one hundred and five", "105"),
    ("10 percent off", "10% off"),
    ("Wednesday at 8:30", "Wednesday at eight thirty"),
    ("OK, I'll call", "okay ill call"),
])
def test_same_after_normalization(a: str, b: str) -> None:
    assert normalize(a) == normalize(b)


def test_oh_is_only_zero_between_digits() -> None:
    assert normalize("Oh, that is two oh one") == "oh that is 201"


def test_wer_counts_word_edits_after_normalization() -> None:
    assert wer("I want order 58213 refunded", "I want order five eight two one three refunded") == 0.0
    assert wer("a b c d", "a x c") == 0.5
    assert wer("", "") == 0.0
