"""Salesforce connector against a fake of its REST API: OAuth flows, SOSL phone search,
Task upsert by CallObject, 401 refresh, 429 Retry-After, outage then recovery."""

from __future__ import annotations

import asyncio

import pytest

from cti.calls.activity import ActivityWriter
from cti.clock import ManualClock
from cti.config import CrmSettings
from cti.crm.base import CrmAuthError, CrmUnavailable, open_connector
from cti.crm.salesforce import SalesforceConnector
from cti.model import Activity, Direction, Outcome
from tests.crm.fakes import FakeSalesforce, serve
from tests.crm.test_activity import ended_call


@pytest.fixture
async def sf():
    fake = FakeSalesforce()
    acc = fake.add("Account", Name="Acme Industries", Phone="01 70 00 00 00", OwnerId="005A")
    fake.add(
        "Contact",
        FirstName="Claire",
        LastName="Dubois",
        Name="Claire Dubois",
        Phone="06 12 34 56 78",
        Title="CFO",
        AccountId=acc,
        OwnerId="005A",
        Email="claire@acme.example",
    )
    fake.add(
        "Lead", FirstName="Léa", LastName="Roux", Name="Léa Roux", MobilePhone="+33 6 12 34 56 78", Company="Roux SARL"
    )
    fake.add("Contact", FirstName="Other", LastName="Person", Name="Other Person", Phone="+1 415 612 345 678")
    async with serve(fake.app()) as url:
        fake.base_url = url
        yield fake


def connector(
    fake: FakeSalesforce, sleeps: list[float] | None = None, timezone: str | None = None, **opts
) -> SalesforceConnector:
    async def sleep(s: float) -> None:
        if sleeps is not None:
            sleeps.append(s)

    options = {"login_url": fake.base_url, "client_id": "cid", "client_secret": "secret", **opts}
    return SalesforceConnector(options, sleep=sleep, timezone=timezone)


def activity(**kw) -> Activity:
    base = dict(
        call_id="call-1",
        subject="Inbound call from 06 12 34 56 78",
        direction=Direction.INBOUND,
        from_number="+33612345678",
        to_number="+33170000000",
        duration_s=125.4,
        outcome=Outcome.ANSWERED,
        contact_id="003000000000000002",
        account_id="001000000000000001",
        agent="alice",
        disposition="resolved",
        notes="Refund sent",
    )
    base.update(kw)
    return Activity(**base)


async def test_lookup_uses_sosl_phone_search_and_rechecks_in_e164(sf):
    crm = connector(sf)
    try:
        found = await crm.lookup("+33612345678")
    finally:
        await crm.close()
    assert [(c.kind, c.name) for c in found] == [("contact", "Claire Dubois"), ("lead", "Léa Roux")]
    claire = found[0]
    assert claire.account_name == "Acme Industries" and claire.role == "CFO"
    assert claire.url == f"{sf.base_url}/lightning/r/Contact/{claire.id}/view"
    assert claire.fields["contact.role"] == "CFO"
    (q,) = sf.searches
    assert q.startswith("FIND {0612345678 OR 33612345678 OR 612345678} IN PHONE FIELDS RETURNING Contact(")
    assert "Account(" in q and "Lead(" in q
    # the US number ending with the same digits came back from SOSL but is not this caller
    assert all("Other" not in c.name for c in found)


async def test_account_switchboard_number(sf):
    crm = connector(sf)
    try:
        (acc,) = await crm.lookup("+33170000000")
    finally:
        await crm.close()
    assert acc.kind == "account" and acc.name == "Acme Industries"


async def test_token_flows_client_credentials_password_and_refresh(sf):
    for opts in ({}, {"username": "agent@example.com", "password": "pw"}, {"refresh_token": "rt-1"}):
        crm = connector(sf, **opts)
        try:
            assert len(await crm.lookup("+33612345678")) == 2
        finally:
            await crm.close()
    assert sf.issued == 3


async def test_bad_credentials_are_an_auth_error(sf):
    crm = connector(sf, client_secret="wrong")
    try:
        with pytest.raises(CrmAuthError, match="invalid client credentials"):
            await crm.lookup("+33612345678")
    finally:
        await crm.close()


async def test_expired_session_refreshes_the_token_once(sf):
    crm = connector(sf)
    try:
        await crm.lookup("+33612345678")
        sf.expire_tokens()
        assert len(await crm.lookup("+33612345678")) == 2
    finally:
        await crm.close()
    assert sf.issued == 2 and crm.tokens.refreshes == 2


async def test_rate_limit_waits_what_retry_after_says(sf):
    sleeps: list[float] = []
    crm = connector(sf, sleeps)
    try:
        await crm.lookup("+33612345678")
        sf.throttle = ["2", "3"]
        assert len(await crm.lookup("+33612345678")) == 2
        assert sleeps == [2.0, 3.0]
        sf.throttle = ["3600"]
        with pytest.raises(CrmUnavailable, match="429"):
            await crm.lookup("+33612345678")
    finally:
        await crm.close()


async def test_task_is_created_once_and_updated_after(sf):
    crm = connector(sf)
    try:
        tid = await crm.log_activity(activity())
        tid2 = await crm.log_activity(activity(disposition="follow_up", notes="Call back Monday"))
        # two concurrent pushes of the same call still make one Task
        t3, t4 = await asyncio.gather(crm.log_activity(activity()), crm.log_activity(activity()))
    finally:
        await crm.close()
    assert tid == tid2 == t3 == t4 and list(sf.tasks) == [tid]
    task = sf.tasks[tid]
    assert task["CallObject"] == "call-1" and task["CallType"] == "Inbound"
    assert task["CallDurationInSeconds"] == 125 and task["TaskSubtype"] == "Call"
    assert task["WhoId"] == "003000000000000002" and task["WhatId"] == "001000000000000001"
    assert task["CallDisposition"] == "resolved"


async def test_lead_task_has_no_what_id(sf):
    crm = connector(sf)
    try:
        tid = await crm.log_activity(activity(contact_id="00Q000000000000003", call_id="call-9"))
    finally:
        await crm.close()
    assert "WhatId" not in sf.tasks[tid] and sf.tasks[tid]["WhoId"].startswith("00Q")


async def test_transcript_is_attached_once(sf):
    crm = connector(sf)
    try:
        with pytest.raises(CrmUnavailable):
            await crm.log_transcript("call-1", "hello", None)  # no Task yet: retry later
        tid = await crm.log_activity(activity())
        for _ in range(2):
            await crm.log_transcript("call-1", "Agent: hello. Customer: refund please.", {"key_points": ["refund"]})
    finally:
        await crm.close()
    desc = sf.tasks[tid]["Description"]
    assert desc.startswith("Refund sent") and desc.count("--- Transcript ---") == 1 and "- refund" in desc


async def test_outage_then_recovery_syncs_one_task(sf, lite_engine):
    crm = connector(sf)
    clock = ManualClock()
    writer = ActivityWriter(lite_engine, crm, clock, retry_base_s=1, jitter=0)
    try:
        sf.fail_with = 503
        assert await writer.on_call(ended_call()) is False
        sf.fail_with = None
        await clock.advance(1)
        assert await writer.retry_due() == 1
        await writer.wrap_up("call-1", "resolved", "ok")
    finally:
        await crm.close()
    (task,) = sf.tasks.values()
    assert task["CallObject"] == "call-1" and task["CallDisposition"] == "resolved"


def test_factory_needs_credentials():
    from cti.crm.base import CrmError

    with pytest.raises(CrmError, match="client_id"):
        open_connector(CrmSettings(type="salesforce"), engine=None)
    assert (
        open_connector(CrmSettings(type="salesforce", client_id="x", client_secret="y"), engine=None).name
        == "salesforce"
    )


async def test_known_task_id_is_patched_directly(sf):
    from dataclasses import replace

    crm = connector(sf)
    try:
        tid = await crm.log_activity(activity())
        queries = sum(1 for _, p in sf.requests if p.endswith("/query"))
        assert await crm.log_activity(replace(activity(notes="updated"), crm_ref=tid)) == tid
    finally:
        await crm.close()
    assert sum(1 for _, p in sf.requests if p.endswith("/query")) == queries
    assert sf.tasks[tid]["Description"].startswith("updated")


async def test_task_update_leaves_create_only_fields_alone(sf):
    """TaskSubtype can be set on insert only: a PATCH carrying it is refused."""
    crm = connector(sf)
    try:
        tid = await crm.log_activity(activity())
        assert await crm.log_activity(activity(disposition="follow_up")) == tid
    finally:
        await crm.close()
    assert sf.tasks[tid]["TaskSubtype"] == "Call" and sf.tasks[tid]["CallDisposition"] == "follow_up"


async def test_spent_api_allocation_is_retry_later_not_a_refusal(sf):
    """Salesforce says 403 REQUEST_LIMIT_EXCEEDED when the org's allocation is spent."""
    crm = connector(sf)
    try:
        await crm.lookup("+33612345678")
        sf.over_limit = True
        with pytest.raises(CrmUnavailable, match="REQUEST_LIMIT_EXCEEDED"):
            await crm.log_activity(activity())
        sf.over_limit = False
        tid = await crm.log_activity(activity())
    finally:
        await crm.close()
    assert list(sf.tasks) == [tid]


async def test_row_lock_is_retry_later(sf):
    crm = connector(sf)
    try:
        sf.locked_rows = 1
        with pytest.raises(CrmUnavailable, match="UNABLE_TO_LOCK_ROW"):
            await crm.log_activity(activity())
        tid = await crm.log_activity(activity())
    finally:
        await crm.close()
    assert list(sf.tasks) == [tid]


async def test_contact_found_by_home_or_other_phone(sf):
    sf.add("Contact", FirstName="Home", LastName="Only", Name="Home Only", HomePhone="04 72 00 00 01")
    sf.add("Contact", FirstName="Other", LastName="Line", Name="Other Line", Phone=None, OtherPhone="+33 4 72 00 00 02")
    crm = connector(sf)
    try:
        (home,) = await crm.lookup("+33472000001")
        (other,) = await crm.lookup("+33472000002")
    finally:
        await crm.close()
    assert home.name == "Home Only" and other.name == "Other Line"


async def test_lost_create_answer_is_not_replayed_into_a_second_task(sf):
    """The insert committed but its answer came too late: a blind replay would make a second
    Task; the next push finds the first by CallObject instead."""
    crm = connector(sf, timeout_s=0.2)
    try:
        await crm.lookup("+33612345678")  # token first: only the insert is slow
        sf.create_delay_s = 1.0
        with pytest.raises(CrmUnavailable):
            await crm.log_activity(activity())
        sf.create_delay_s = 0.0
        tid = await crm.log_activity(activity())
    finally:
        await crm.close()
    assert list(sf.tasks) == [tid]


async def test_update_after_the_transcript_keeps_the_transcript(sf):
    from dataclasses import replace

    crm = connector(sf)
    try:
        tid = await crm.log_activity(activity())
        await crm.log_transcript("call-1", "Agent: hello.", None)
        await crm.log_activity(activity(notes="Wrap-up typed late"))  # found by CallObject
        await crm.log_activity(replace(activity(notes="Wrap-up edited"), crm_ref=tid))  # known id
    finally:
        await crm.close()
    desc = sf.tasks[tid]["Description"]
    assert desc.startswith("Wrap-up edited") and desc.count("--- Transcript ---") == 1
    assert desc.endswith("Agent: hello.")


async def test_static_token_without_instance_url_is_a_clear_error(sf):
    from cti.crm.base import CrmError

    crm = SalesforceConnector({"access_token": "00Dx!static"})
    try:
        with pytest.raises(CrmError, match="instance_url"):
            await crm.lookup("+33612345678")
    finally:
        await crm.close()


async def test_a_task_pushed_after_an_outage_is_dated_the_day_the_call_started_where_the_site_is(sf, lite_engine):
    from dataclasses import replace
    from datetime import UTC, datetime, timedelta

    start = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)  # 00:30 on 3 March in Paris
    call = replace(ended_call(), created_at=start, answered_at=start, ended_at=start + timedelta(minutes=2))
    crm = connector(sf, timezone="Europe/Paris")
    clock = ManualClock(start=start + timedelta(minutes=2))
    writer = ActivityWriter(lite_engine, crm, clock, retry_base_s=60, jitter=0)
    try:
        sf.fail_with = 503
        assert await writer.on_call(call) is False
        await clock.advance(2 * 86400)  # the CRM is back two days later
        sf.fail_with = None
        assert await writer.retry_due() == 1
    finally:
        await crm.close()
    (task,) = sf.tasks.values()
    assert task["ActivityDate"] == "2026-03-03"


def test_activity_date_is_the_calls_day_in_the_site_time_zone_or_utc():
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from cti.crm.salesforce import activity_date

    a = activity(started_at=datetime(2026, 3, 2, 23, 30, tzinfo=UTC))
    assert activity_date(a) == "2026-03-02"
    assert activity_date(a, ZoneInfo("Europe/Paris")) == "2026-03-03"
    assert activity_date(activity()) is None  # no time: no date rather than the push's


def test_the_site_time_zone_reaches_the_connector():
    from cti.config import Settings
    from cti.crm import build_connector

    settings = Settings(crm=CrmSettings(type="salesforce", client_id="x", client_secret="y"))
    assert str(build_connector(settings, None).tz) == settings.site.timezone == "Europe/Paris"
    assert str(SalesforceConnector({}).tz) == "UTC"
