"""Generic REST connector: URL templates, field mapping, PUT-by-call-id idempotence."""

from __future__ import annotations

import pytest

from cti.config import CrmSettings
from cti.crm.base import CrmAuthError, open_connector
from cti.model import Activity, Direction, Outcome
from tests.crm.fakes import FakeInHouse, serve


@pytest.fixture
async def inhouse():
    fake = FakeInHouse()
    fake.people = [
        {
            "id": 7,
            "first": "Claire",
            "last": "Dubois",
            "phones": ["06.12.34.56.78"],
            "company": {"id": 42, "name": "Acme", "revenue_24m": 120000},
            "title": "CFO",
        },
        {"id": 8, "first": "Wrong", "last": "Country", "phones": ["+1 (201) 2 345 678"]},  # same last 9 digits
    ]
    async with serve(fake.app()) as url:
        fake.base_url = url
        yield fake


def settings(url: str, **kw) -> CrmSettings:
    return CrmSettings(
        type="http",
        lookup_url=url + "/api/people?phone={e164}",
        results_path="data",
        activity_url=url + "/api/calls/{call_id}",
        transcript_url=url + "/api/calls/{call_id}/transcript",
        token="inhouse-token",
        mapping={
            "first_name": "first",
            "last_name": "last",
            "role": "title",
            "account_id": "company.id",
            "account_name": "company.name",
            "name": "",
            "fields": {"account.won_amount_24m": "company.revenue_24m"},
        },
        **kw,
    )


async def test_lookup_maps_fields_and_rechecks_numbers(inhouse):
    crm = open_connector(settings(inhouse.base_url), engine=None)
    try:
        (c,) = await crm.lookup("+33612345678")
    finally:
        await crm.close()
    assert (c.id, c.name, c.account_id, c.account_name, c.role) == ("7", "Claire Dubois", "42", "Acme", "CFO")
    assert c.fields == {"account.won_amount_24m": 120000}
    assert inhouse.requests[0] == ("GET", "/api/people?phone=%2B33612345678")


async def test_activity_put_by_call_id_is_idempotent(inhouse):
    crm = open_connector(settings(inhouse.base_url), engine=None)
    a = Activity(
        call_id="call-1",
        subject="Inbound",
        direction=Direction.INBOUND,
        from_number="+33612345678",
        to_number="+33170000000",
        duration_s=12,
        outcome=Outcome.ANSWERED,
        disposition="sale",
    )
    try:
        ref = await crm.log_activity(a)
        assert await crm.log_activity(a) == ref == "CALL-call-1"
        await crm.log_transcript("call-1", "hi", {"key_points": []})
    finally:
        await crm.close()
    assert list(inhouse.calls) == ["call-1"] and inhouse.calls["call-1"]["disposition"] == "sale"
    assert inhouse.transcripts["call-1"]["text"] == "hi"


async def test_bad_token_is_an_auth_error(inhouse):
    crm = open_connector(settings(inhouse.base_url).model_copy(update={"token": "nope"}), engine=None)
    try:
        with pytest.raises(CrmAuthError):
            await crm.lookup("+33612345678")
    finally:
        await crm.close()


async def test_an_activity_put_after_an_outage_carries_the_calls_start(inhouse, lite_engine):
    from datetime import timedelta

    from cti.calls.activity import ActivityWriter
    from cti.clock import ManualClock
    from cti.crm.http import HttpConnector
    from tests.crm.test_activity import T0, started_call

    async def no_wait(_s: float) -> None:
        return None

    crm = HttpConnector(settings(inhouse.base_url).options, sleep=no_wait)
    clock = ManualClock(start=T0 + timedelta(minutes=2))
    writer = ActivityWriter(lite_engine, crm, clock, retry_base_s=60, jitter=0)
    try:
        inhouse.fail_with = 503
        assert await writer.on_call(started_call()) is False
        await clock.advance(3 * 3600)
        inhouse.fail_with = None
        assert await writer.retry_due() == 1
    finally:
        await crm.close()
    assert inhouse.calls["call-1"]["started_at"] == "2026-03-02T09:00:00+00:00"
