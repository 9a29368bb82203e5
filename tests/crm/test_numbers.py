"""Matching a caller against numbers as CRMs store them (remote connectors re-check every hit)."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cti.crm.numbers import same_number, variants


@pytest.mark.parametrize(
    "stored",
    [
        "06 12 34 56 78",
        "0612345678",
        "+33 6 12 34 56 78",
        "0033612345678",
        "+33 (0)6 12 34 56 78",
        "06.12.34.56.78 ext. 4",
        "612345678",
        "33612345678",
        "+33612345678;ext=2",
    ],
)
def test_renderings_of_the_same_number_match(stored):
    assert same_number(stored, "+33612345678", "FR")


@pytest.mark.parametrize("stored", ["06 12 34 56 79", "+1 415 612 345 678", "+44 20 7946 0001", "", None, "abc"])
def test_other_numbers_do_not(stored):
    assert not same_number(stored, "+33612345678", "FR")


def test_variants_for_crm_side_searches():
    v = variants("+442079460001", "FR")
    assert (v["national"], v["nsn"], v["e164_digits"]) == ("02079460001", "2079460001", "442079460001")


@settings(max_examples=300, deadline=None)
@given(
    digits=st.text(alphabet="0123456789", min_size=8, max_size=8),
    other=st.text(alphabet="0123456789", min_size=8, max_size=8),
    style=st.sampled_from(["national", "national_formatted", "international", "e164", "e164_digits", "nsn"]),
    sep=st.sampled_from(["", " ", ".", "-"]),
)
def test_a_number_matches_its_renderings_and_never_another_number(digits, other, style, sep):
    e164 = "+336" + digits
    assume(phonenumbers.is_valid_number(phonenumbers.parse(e164)))
    rendering = variants(e164, "FR")[style]
    if sep and style in ("national", "nsn", "e164_digits"):
        rendering = sep.join(rendering[i : i + 2] for i in range(0, len(rendering), 2))
    assert same_number(rendering, e164, "FR")
    other_e164 = "+336" + other
    assume(other != digits and phonenumbers.is_valid_number(phonenumbers.parse(other_e164)))
    assert not same_number(rendering, other_e164, "FR")
