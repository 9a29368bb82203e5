"""The benchmark's key-fact matching: same fact in other words and number forms (own sentences)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from transcribe import fact_found

from cti.transcribe.textnorm import normalize


@pytest.mark.parametrize(("fact", "said"), [
    ("$75 credit", "I'll put a credit of seventy-five dollars on the account."),
    ("October 21st", "We can come on the twenty-first of October."),
    ("ticket number 40917", "Your ticket is four oh nine one seven, the number for later."),
    ("Thursday at 3:15 pm", "Thursday at quarter past three in the afternoon then."),
    ("12 licenses", "we need twelve licenses for the team"),
    ("tomorrow at 11 am", "I can call you at eleven tomorrow morning."),
])
def test_fact_found_in_other_words(fact: str, said: str) -> None:
    assert fact_found(fact, normalize(said).split())


@pytest.mark.parametrize(("fact", "said"), [
    ("$75 credit", "I'll put a credit of seventy dollars on the account."),
    ("October 21st", "We can come on the twentieth of October."),
    ("12 licenses", "twelve people, and later, after a long talk about the weather and the team, licenses"),
])
def test_fact_not_found_when_different(fact: str, said: str) -> None:
    assert not fact_found(fact, normalize(said).split())
