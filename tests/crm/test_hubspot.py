"""HubSpot connector against a fake of CRM API v3: phone search with paging, call
engagements upserted by our call-id property, OAuth refresh on 401, 429 handling."""

from __future__ import annotations

import pytest

from cti.crm.base import CrmAuthError, CrmUnavailable
from cti.crm.hubspot import HubSpotConnector
from cti.model import Activity, Direction, Outcome
from tests.crm.fakes import FakeHubSpot, serve


@pytest.fixture
async def hs():
    fake = FakeHubSpot()
    fake.add_contact(
        firstname="Claire",
        lastname="Dubois",
        phone="+33612345678",
        company="Acme",
        jobtitle="CFO",
        associatedcompanyid="501",
    )
    fake.add_contact(firstname="Paul", lastname="Durand", phone="06 12 34 56 78")
    fake.add_contact(firstname="Zoé", lastname="Petit", mobilephone="+33 6 12 34 56 78")
    fake.add_contact(firstname="Not", lastname="Me", phone="+33612345679")
    async with serve(fake.app()) as url:
        fake.base_url = url
        yield fake


def connector(fake, sleeps=None, clock=None, **opts) -> HubSpotConnector:
    async def sleep(s: float) -> None:
        if sleeps is not None:
            sleeps.append(s)

    return HubSpotConnector({"base_url": fake.base_url, **opts}, sleep=sleep, clock=clock)


async def test_lookup_follows_paging_and_matches_every_format(hs):
    crm = connector(hs, access_token=hs.give_token(), page_size=2)
    try:
        found = await crm.lookup("+33612345678")
    finally:
        await crm.close()
    assert sorted(c.name for c in found) == ["Claire Dubois", "Paul Durand", "Zoé Petit"]
    assert len(hs.search_bodies) == 2 and hs.search_bodies[1]["after"] == "2"
    claire = next(c for c in found if c.first_name == "Claire")
    assert claire.account_name == "Acme" and claire.account_id == "501" and claire.fields["contact.role"] == "CFO"


async def test_private_app_token_rejected_without_refresh_token_is_an_auth_error(hs):
    crm = connector(hs, access_token="revoked")
    try:
        with pytest.raises(CrmAuthError, match="no refresh_token"):
            await crm.lookup("+33612345678")
    finally:
        await crm.close()


async def test_401_refreshes_the_oauth_token(hs):
    crm = connector(hs, access_token="expired", client_id="hcid", client_secret="hsecret", refresh_token="hrt-1")
    try:
        assert len(await crm.lookup("+33612345678")) == 3
        hs.expire_tokens()
        assert len(await crm.lookup("+33612345678")) == 3
    finally:
        await crm.close()
    assert hs.issued == 2


async def test_429_with_and_without_retry_after(hs):
    sleeps: list[float] = []
    crm = connector(hs, sleeps, access_token=hs.give_token())
    try:
        hs.throttle = ["1", None]
        assert len(await crm.lookup("+33612345678")) == 3
        assert sleeps[0] == 1.0 and sleeps[1] > 0  # no header: our own backoff
        hs.throttle = [None] * 10
        with pytest.raises(CrmUnavailable, match="429"):
            await crm.lookup("+33612345678")
    finally:
        await crm.close()


def act(**kw) -> Activity:
    base = dict(
        call_id="call-1",
        subject="Inbound call",
        direction=Direction.INBOUND,
        from_number="+33612345678",
        to_number="+33170000000",
        duration_s=61.5,
        outcome=Outcome.ANSWERED,
        contact_id="101",
        account_id="501",
        agent="alice",
        disposition="resolved",
        notes="Refund sent",
        recording_url="https://cti.example/rec/call-1",
    )
    base.update(kw)
    return Activity(**base)


async def test_call_engagement_is_created_once_then_updated(hs):
    crm = connector(hs, access_token=hs.give_token())
    try:
        ref = await crm.log_activity(act())
        ref2 = await crm.log_activity(act(notes="Refund sent, customer happy"))
        await crm.log_transcript("call-1", "hello", None)
        await crm.log_transcript("call-1", "hello again", None)
    finally:
        await crm.close()
    assert ref == ref2 and list(hs.calls) == [ref]
    props = hs.calls[ref]["properties"]
    assert props["cti_call_id"] == "call-1" and props["hs_call_direction"] == "INBOUND"
    assert props["hs_call_duration"] == "61500" and props["hs_call_status"] == "COMPLETED"
    assert "customer happy" in props["hs_call_body"] and props["hs_call_body"].count("Transcript") == 1
    assert "hello again" in props["hs_call_body"]
    assocs = hs.associations[ref]
    assert [(a["to"]["id"], a["types"][0]["associationTypeId"]) for a in assocs] == [("101", 194), ("501", 182)]


async def test_missing_custom_property_is_a_clear_error(hs):
    from cti.crm.base import CrmError

    crm = connector(hs, access_token=hs.give_token(), id_property="our_call_ref")
    try:
        with pytest.raises(CrmError, match="our_call_ref"):
            await crm.log_activity(act())
    finally:
        await crm.close()


async def test_known_crm_ref_updates_without_searching_and_survives_a_deleted_engagement(hs):
    from dataclasses import replace

    crm = connector(hs, access_token=hs.give_token())
    try:
        ref = await crm.log_activity(act())
        searches = sum(1 for m, p in hs.requests if p == "/crm/v3/objects/calls/search")
        assert await crm.log_activity(replace(act(notes="later"), crm_ref=ref)) == ref
        assert sum(1 for m, p in hs.requests if p == "/crm/v3/objects/calls/search") == searches
        del hs.calls[ref]  # someone deleted it in HubSpot: recreated, not lost
        new = await crm.log_activity(replace(act(), crm_ref=ref))
    finally:
        await crm.close()
    assert new != ref and list(hs.calls) == [new]


async def test_lost_create_answer_is_not_replayed_into_a_second_engagement(hs):
    """The engagement was created but its answer came too late: a blind replay would make a
    second one; the next push finds the first by our call-id property instead."""
    crm = connector(hs, access_token=hs.give_token(), timeout_s=0.2)
    try:
        hs.create_delay_s = 1.0
        with pytest.raises(CrmUnavailable):
            await crm.log_activity(act())
        hs.create_delay_s = 0.0
        ref = await crm.log_activity(act())
    finally:
        await crm.close()
    assert list(hs.calls) == [ref]


async def test_update_after_the_transcript_keeps_the_transcript(hs):
    from dataclasses import replace

    crm = connector(hs, access_token=hs.give_token())
    try:
        ref = await crm.log_activity(act())
        await crm.log_transcript("call-1", "Agent: hello.", None)
        await crm.log_activity(act(notes="Wrap-up typed late"))  # found by search
        await crm.log_activity(replace(act(notes="Wrap-up edited"), crm_ref=ref))  # known id
    finally:
        await crm.close()
    body = hs.calls[ref]["properties"]["hs_call_body"]
    assert "Wrap-up edited" in body and "typed late" not in body
    assert body.count("Transcript") == 1 and body.endswith("Agent: hello.</p>")


async def test_a_call_pushed_after_an_outage_sits_on_the_timeline_when_it_happened(hs, lite_engine):
    from datetime import timedelta

    from cti.calls.activity import ActivityWriter
    from cti.clock import ManualClock
    from tests.crm.test_activity import T0, started_call

    clock = ManualClock(start=T0 + timedelta(minutes=2))
    crm = connector(hs, clock=clock, access_token=hs.give_token())  # pushes at the clock's time
    writer = ActivityWriter(lite_engine, crm, clock, retry_base_s=60, jitter=0)
    try:
        hs.fail_with = 503
        assert await writer.on_call(started_call()) is False
        await clock.advance(3 * 3600)  # back three hours later
        hs.fail_with = None
        assert await writer.retry_due() == 1
    finally:
        await crm.close()
    (call,) = hs.calls.values()
    assert call["properties"]["hs_timestamp"] == "2026-03-02T09:00:00Z"  # the call's start, not 12:02


async def test_an_update_dates_the_engagement_with_the_call_and_keeps_it_without_one(hs):
    from datetime import UTC, datetime

    crm = connector(hs, access_token=hs.give_token())
    try:
        ref = await crm.log_activity(act())  # no time of its own: dated at the push
        hs.calls[ref]["properties"]["hs_timestamp"] = "2026-03-02T12:00:00Z"
        await crm.log_activity(act(notes="later"))
        assert hs.calls[ref]["properties"]["hs_timestamp"] == "2026-03-02T12:00:00Z"
        await crm.log_activity(act(started_at=datetime(2026, 3, 2, 9, 0, tzinfo=UTC)))
    finally:
        await crm.close()
    assert hs.calls[ref]["properties"]["hs_timestamp"] == "2026-03-02T09:00:00Z"
