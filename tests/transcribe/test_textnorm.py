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
    # own sentences, not the shared calls: currency, times, dates, ids in other spoken forms
    ("a credit of $75", "a credit of seventy-five bucks"),
    ("it costs $240", "it costs two hundred and forty dollars"),
    ("a fee of $150", "a fee of a hundred and fifty dollars"),
    ("a £40 refund", "a forty pounds refund"),
    ("€300 deposit", "three hundred euros deposit"),
    ("a 5 percent surcharge", "a five per cent surcharge"),
    ("Friday at 7:45 am", "Friday at seven forty-five in the morning"),
    ("Monday at 2:30 pm", "Monday at half past two in the afternoon"),
    ("Tuesday at 9:15", "Tuesday at quarter past nine"),
    ("pick up at 12 pm", "pick up at noon"),
    ("call me at 11 am", "call me at eleven in the morning"),
    ("due October 21st", "due October twenty-first"),
    ("a 2021 Toyota Corolla", "a twenty twenty-one Toyota Corolla"),
    ("case number 770918", "case number double seven oh nine one eight"),
    ("invoice 4002", "invoice four thousand and two"),
    ("serial 6119", "serial six one one nine"),
])
def test_same_after_normalization(a: str, b: str) -> None:
    assert normalize(a) == normalize(b)


def test_oh_is_only_zero_between_digits() -> None:
    assert normalize("Oh, that is two oh one") == "oh that is 201"


def test_wer_counts_word_edits_after_normalization() -> None:
    assert wer("I want order 58213 refunded", "I want order five eight two one three refunded") == 0.0
    assert wer("a b c d", "a x c") == 0.5
    assert wer("", "") == 0.0


def test_scaled_amount_after_article() -> None:
    assert normalize("a thousand users") == "1000 users"
    assert normalize("a lot of users") == "a lot of users"
