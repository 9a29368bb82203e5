"""The embedded directory: CSV import (bad rows reported) and lookups in every number format."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cti.crm.local import LocalConnector, crm_import_main, import_csv, parse_contact_row
from cti.phone import to_e164
from tests.crm.conftest import DATA


async def test_import_reports_bad_rows_with_line_and_reason_and_imports_the_rest(engine):
    report = await import_csv(engine, DATA / "contacts.csv", DATA / "accounts.csv", "FR")
    errors = {(e.file, e.line): e.reason for e in report.errors}
    assert ("accounts.csv", 4) in errors and "won_amount_24m" in errors[("accounts.csv", 4)]
    assert ("accounts.csv", 5) in errors and "id is empty" in errors[("accounts.csv", 5)]
    assert ("contacts.csv", 6) in errors and "phone" in errors[("contacts.csv", 6)]
    assert ("contacts.csv", 7) in errors and "first_name and last_name" in errors[("contacts.csv", 7)]
    assert ("contacts.csv", 10) in errors and "duplicate contact id" in errors[("contacts.csv", 10)]
    assert len(report.errors) == 5
    assert report.accounts == 3
    assert report.contacts == 6


async def test_reimport_updates_instead_of_duplicating(engine):
    await import_csv(engine, DATA / "contacts.csv", DATA / "accounts.csv", "FR")
    again = await import_csv(engine, DATA / "contacts.csv", DATA / "accounts.csv", "FR")
    assert again.contacts == 6
    crm = LocalConnector(engine)
    assert [c.id for c in await crm.lookup("+33698765432")] == ["c-2"]


@pytest.mark.parametrize(
    "stored_as_csv_row, e164",
    [
        ("c-1", "+33612345678"),  # 06 12 34 56 78
        ("c-2", "+33698765432"),  # 0033 6 98 76 54 32 (mobile column)
        ("c-3", "+33491000001"),  # dots + extension
        ("c-7", "+442079460001"),  # +44 (0)20 ...
    ],
)
async def test_lookup_finds_contact_whatever_format_the_crm_stored(engine, stored_as_csv_row, e164):
    await import_csv(engine, DATA / "contacts.csv", DATA / "accounts.csv", "FR")
    found = await LocalConnector(engine).lookup(e164)
    assert stored_as_csv_row in [c.id for c in found]


async def test_lookup_returns_every_contact_sharing_a_number_with_account_fields(engine):
    await import_csv(engine, DATA / "contacts.csv", DATA / "accounts.csv", "FR")
    found = await LocalConnector(engine).lookup("+33612345678")
    assert sorted(c.id for c in found) == ["c-1", "c-4"]
    claire = next(c for c in found if c.id == "c-1")
    assert claire.name == "Claire Dubois" and claire.account_name == "Acme Industries"
    assert claire.fields["account.won_amount_24m"] == 120000.0
    assert claire.fields["contact.role"] == "CFO"
    assert claire.fields["account.tier"] == "gold"
    assert claire.owner == "alice"


async def test_account_switchboard_number_matches_the_account(engine):
    await import_csv(engine, DATA / "contacts.csv", DATA / "accounts.csv", "FR")
    found = await LocalConnector(engine).lookup("+33170000000")
    assert [(c.kind, c.id, c.name) for c in found] == [("account", "acc-acme", "Acme Industries")]


async def test_contact_with_only_an_account_name_gets_that_account(engine):
    await import_csv(engine, DATA / "contacts.csv", DATA / "accounts.csv", "FR")
    (tom,) = await LocalConnector(engine).lookup("+33612000001")
    assert tom.account_name == "NewCo" and tom.account_id


async def test_unknown_number_matches_nobody(engine):
    await import_csv(engine, DATA / "contacts.csv", DATA / "accounts.csv", "FR")
    assert await LocalConnector(engine).lookup("+33699999999") == []


async def test_create_contact_then_lookup(lite_engine):
    crm = LocalConnector(lite_engine)
    c = await crm.create_contact(phone="06 55 44 33 22", first_name="Zoé", last_name="Petit", account_name="Zed")
    (found,) = await crm.lookup("+33655443322")
    assert found.id == c.id and found.name == "Zoé Petit" and found.account_name == "Zed"


def test_cli_import_exits_1_when_rows_were_rejected(tmp_path, capsys):
    url = f"sqlite+aiosqlite:///{tmp_path}/x.db"
    rc = crm_import_main([str(DATA / "contacts.csv"), "--accounts", str(DATA / "accounts.csv"), "--store-url", url])
    out = capsys.readouterr().out
    assert rc == 1
    assert "contacts.csv:6:" in out and "imported 3 accounts, 6 contacts" in out
    assert crm_import_main(["/nonexistent.csv", "--store-url", url]) == 2


# numbers people type for the same French mobile
_FORMATS = [
    "06 12 34 56 78",
    "0612345678",
    "06.12.34.56.78",
    "06-12-34-56-78",
    "+33 6 12 34 56 78",
    "+33612345678",
    "0033612345678",
    "0033 6 12 34 56 78",
    "+33 (0)6 12 34 56 78",
    "+33.6.12.34.56.78 ext. 42",
    "06 12 34 56 78 x12",
    "tel:+33612345678",
]


@pytest.mark.parametrize("raw", _FORMATS)
def test_every_format_normalizes_to_the_same_e164(raw):
    row = {"id": "x", "first_name": "A", "last_name": "B", "phone": raw}
    _, phones = parse_contact_row(row, "FR")
    assert phones[0][0] == "+33612345678"


@settings(max_examples=200, deadline=None)
@given(
    digits=st.text(alphabet="0123456789", min_size=8, max_size=8),
    sep=st.sampled_from(["", " ", ".", "-"]),
    prefix=st.sampled_from(["06", "+336", "00336", "+33 6", "0033 6"]),
    ext=st.sampled_from(["", " ext. 7", " x99", ";ext=3"]),
)
def test_any_rendering_of_a_mobile_number_matches_its_e164(digits, sep, prefix, ext):
    # only allocated ranges are valid numbers (phonenumbers rejects the others, rightly)
    assume(phonenumbers.is_valid_number(phonenumbers.parse("+336" + digits)))
    grouped = sep.join(digits[i : i + 2] for i in range(0, 8, 2))
    raw = f"{prefix}{sep}{grouped}{ext}"
    assert to_e164(raw, "FR") == "+336" + digits
