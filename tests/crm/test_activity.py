"""One activity per call, pushed to the CRM with retries: an outage delays it, never loses it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from cti.calls.activity import ActivityWriter, activity_for, backoff_s
from cti.clock import ManualClock
from cti.crm.cache import CachedLookup
from cti.crm.local import LocalConnector
from cti.model import Activity, Call, CallState, Contact, Direction, Outcome
from cti.store.tables import activities, calls

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class RecordingCrm:
    """A CRM that keeps one record per call id (like the real connectors) and can be down."""

    name = "fake"

    def __init__(self, matches: list[Contact] | None = None) -> None:
        self.records: dict[str, Activity] = {}
        self.pushes = 0
        self.down = False
        self.matches = matches or []

    async def lookup(self, e164: str) -> list[Contact]:
        return self.matches

    async def log_activity(self, activity: Activity) -> str:
        self.pushes += 1
        if self.down:
            raise ConnectionError("503 Service Unavailable")
        self.records[activity.call_id] = activity
        return f"crm-{activity.call_id}"

    async def log_transcript(self, call_id, text, summary):
        return None


def ended_call(call_id: str = "call-1", agents_rung=("alice", "bob", "carol")) -> Call:
    return Call(
        call_id=call_id,
        tenant="default",
        provider="sim",
        provider_call_id=call_id,
        direction=Direction.INBOUND,
        state=CallState.ENDED,
        from_number="+33612345678",
        to_number="+33170000000",
        queue="support",
        agent="bob",
        outcome=Outcome.ANSWERED,
        answered_at=T0,
        ended_at=T0,
        talk_s=100.0,
        hold_s=20.0,
        agents_rung=agents_rung,
        recording="rec/call-1.wav",
    )


async def rows(engine):
    async with engine.connect() as conn:
        return (await conn.execute(sa.select(activities))).all()


async def test_ring_all_with_several_matching_contacts_makes_one_activity(engine):
    matches = [
        Contact(id="c-1", name="Claire", account_id="acc-acme"),
        Contact(id="c-4", name="Paul", account_id="acc-acme"),
    ]
    crm = RecordingCrm(matches)
    clock = ManualClock()
    writer = ActivityWriter(engine, crm, clock, lookup=CachedLookup(crm, clock))
    call = ended_call()
    assert await writer.on_call(call)
    assert await writer.on_call(call)  # replayed end event: same row, CRM record updated not duplicated
    (row,) = await rows(engine)
    assert row.call_id == "call-1" and row.agent == "bob" and row.duration_s == 120.0
    assert row.contact_id == "c-1" and row.account_id == "acc-acme"
    assert row.subject == "Inbound call from 06 12 34 56 78"
    assert row.recording_url == "rec/call-1.wav"
    assert row.crm_ref == "crm-call-1" and row.crm_synced_at is not None and row.crm_error is None
    assert list(crm.records) == ["call-1"]


async def test_contact_chosen_on_the_call_record_wins_over_a_lookup(engine):
    crm = RecordingCrm([Contact(id="c-1", name="Claire")])
    writer = ActivityWriter(engine, crm, ManualClock(), lookup=CachedLookup(crm, ManualClock()))
    async with engine.begin() as conn:
        await conn.execute(
            calls.insert().values(
                call_id="call-1",
                tenant="default",
                provider="sim",
                provider_call_id="call-1",
                direction="inbound",
                state="ended",
                contact_id="c-4",
                account_id="acc-acme",
            )
        )
    await writer.on_call(ended_call())
    (row,) = await rows(engine)
    assert (row.contact_id, row.account_id) == ("c-4", "acc-acme")


async def test_crm_outage_then_recovery_syncs_the_activity_once(engine):
    crm = RecordingCrm()
    clock = ManualClock()
    writer = ActivityWriter(engine, crm, clock, retry_base_s=5, retry_max_s=60, jitter=0)
    crm.down = True
    assert await writer.on_call(ended_call()) is False
    (row,) = await rows(engine)
    assert row.crm_attempts == 1 and "503" in row.crm_error and row.crm_synced_at is None
    assert await writer.pending() == ["call-1"]

    assert await writer.retry_due() == 0 and crm.pushes == 1  # backoff not elapsed: no attempt
    await clock.advance(5)
    assert await writer.retry_due() == 0 and crm.pushes == 2  # still down
    await clock.advance(5)
    assert crm.pushes == 2  # second backoff is 10 s
    crm.down = False
    await clock.advance(5)
    assert await writer.retry_due() == 1
    (row,) = await rows(engine)
    assert row.crm_error is None and row.crm_synced_at is not None and row.crm_attempts == 3
    assert await writer.pending() == []
    assert list(crm.records) == ["call-1"]
    await clock.advance(600)
    assert await writer.retry_due() == 0 and crm.pushes == 3


async def test_run_retries_loop_pushes_after_recovery(lite_engine):
    crm = RecordingCrm()
    clock = ManualClock()
    writer = ActivityWriter(lite_engine, crm, clock, retry_base_s=1, jitter=0, poll_s=1)
    crm.down = True
    await writer.on_call(ended_call())
    task = asyncio.create_task(writer.run_retries())
    try:
        crm.down = False
        for _ in range(5):
            await clock.advance(1)
            await asyncio.sleep(0.05)
            if crm.records:
                break
        assert list(crm.records) == ["call-1"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_wrap_up_updates_the_activity_and_resyncs(engine):
    crm = RecordingCrm()
    writer = ActivityWriter(engine, crm, ManualClock())
    await writer.on_call(ended_call())
    assert await writer.wrap_up("call-1", "resolved", "refund sent")
    (row,) = await rows(engine)
    assert (row.disposition, row.notes) == ("resolved", "refund sent")
    assert crm.records["call-1"].disposition == "resolved" and len(crm.records) == 1
    # a replay of the end event must not erase what the agent typed
    await writer.on_call(ended_call())
    (row,) = await rows(engine)
    assert row.disposition == "resolved" and crm.records["call-1"].notes == "refund sent"


async def test_wrap_up_before_the_call_is_recorded_is_kept(lite_engine):
    crm = RecordingCrm()
    writer = ActivityWriter(lite_engine, crm, ManualClock())
    assert await writer.wrap_up("call-1", "sale", "two licences") is False
    await writer.on_call(ended_call())
    (row,) = await rows(lite_engine)
    assert (row.disposition, row.notes) == ("sale", "two licences")


async def test_calls_in_progress_make_no_activity(lite_engine):
    from dataclasses import replace

    writer = ActivityWriter(lite_engine, RecordingCrm(), ManualClock())
    assert await writer.on_call(replace(ended_call(), state=CallState.ANSWERED)) is False
    assert await rows(lite_engine) == []


async def test_local_connector_as_the_crm(lite_engine):
    crm = LocalConnector(lite_engine)
    writer = ActivityWriter(lite_engine, crm, ManualClock())
    assert await writer.on_call(ended_call())
    await writer.wrap_up("call-1", "resolved", None)
    (row,) = await rows(lite_engine)
    assert row.crm_ref == "local:call-1" and row.disposition == "resolved" and row.crm_synced_at is not None
    assert [h["call_id"] for h in await crm.history("+33612345678")] == ["call-1"]


def test_subject_and_backoff():
    from dataclasses import replace

    missed = replace(ended_call(), outcome=Outcome.MISSED)
    assert activity_for(missed).subject == "Inbound call from 06 12 34 56 78 (missed)"
    out = replace(ended_call(), direction=Direction.OUTBOUND, to_number="+442079460001")
    assert activity_for(out).subject == "Outbound call to +44 20 7946 0001"
    assert [backoff_s(n, 5, 60, 0) for n in (1, 2, 3, 4, 5)] == [5, 10, 20, 40, 60]


async def test_a_refused_activity_is_retried_a_few_times_then_left_until_it_changes(lite_engine):
    from cti.crm.base import CrmError

    class RefusingCrm(RecordingCrm):
        refuse = True

        async def log_activity(self, activity):
            self.pushes += 1
            if self.refuse:
                raise CrmError("salesforce: POST /sobjects/Task: 400 FIELD_INTEGRITY_EXCEPTION: WhoId")
            return await super().log_activity(activity)

    crm = RefusingCrm()
    clock = ManualClock()
    writer = ActivityWriter(lite_engine, crm, clock, retry_base_s=1, retry_max_s=1, jitter=0, max_refusals=3)
    await writer.on_call(ended_call())
    for _ in range(5):
        await clock.advance(1)
        await writer.retry_due()
    assert crm.pushes == 3 and await writer.pending() == []
    (row,) = await rows(lite_engine)
    assert row.crm_error.startswith("refused: CrmError") and row.crm_attempts == 3
    crm.refuse = False
    await writer.wrap_up("call-1", "resolved", "fixed")  # new data: a fresh chance
    assert list(crm.records) == ["call-1"]


async def test_a_batch_of_ended_calls_with_the_local_crm_is_one_write_of_synced_activities(engine):
    from dataclasses import replace

    crm = LocalConnector(engine)
    clock = ManualClock()
    writer = ActivityWriter(engine, crm, clock)
    async with engine.begin() as conn:  # the agent chose a contact on call-2 (chooser)
        await conn.execute(calls.insert().values(
            call_id="call-2", tenant="default", provider="sim", provider_call_id="call-2",
            direction="inbound", state="ended", contact_id="c-9", account_id="acc-9"))
    assert await writer.wrap_up("call-3", "sale", "two licences") is False  # before its end
    transactions = 0

    @sa.event.listens_for(engine.sync_engine, "begin")
    def count(_conn) -> None:
        nonlocal transactions
        transactions += 1

    batch = [ended_call("call-1"), ended_call("call-2"), ended_call("call-3"),
             replace(ended_call("call-4"), state=CallState.ANSWERED)]
    await writer.on_calls(batch)
    await writer.on_calls(batch[:2])  # a redelivered batch: still one activity per call
    assert transactions == 4  # per batch: one read of the agents' choices, one write
    got = {r.call_id: r for r in await rows(engine)}
    assert sorted(got) == ["call-1", "call-2", "call-3"]
    assert all(r.crm_ref == f"local:{cid}" and r.crm_synced_at is not None for cid, r in got.items())
    assert (got["call-2"].contact_id, got["call-2"].account_id) == ("c-9", "acc-9")
    assert (got["call-3"].disposition, got["call-3"].notes) == ("sale", "two licences")


async def test_a_crm_backlog_is_worked_off_at_the_configured_pace(lite_engine):
    """After an outage, 50 activities wait; each pass pushes retry_per_s x poll_s of them,
    oldest first, and rows still in backoff do not crowd out the due ones."""
    crm = RecordingCrm()
    clock = ManualClock()
    writer = ActivityWriter(lite_engine, crm, clock, retry_base_s=1000, jitter=0, poll_s=1, retry_per_s=10)
    crm.down = True
    for i in range(50):
        await writer.on_call(ended_call(f"call-{i:02d}"))
        await clock.advance(1)  # one after the other: "oldest first" is well defined
    crm.down = False
    await clock.advance(1000)
    assert await writer.retry_due() == 10
    assert sorted(crm.records) == [f"call-{i:02d}" for i in range(10)]  # the oldest first
    # the next ten fail (CRM down again): in backoff, read again by the next pass, skipped
    crm.down = True
    assert await writer.retry_due() == 0
    crm.down = False
    assert await writer.retry_due() == 10  # not held up by the ten in backoff ahead of them
    assert len(crm.records) == 20 and "call-15" not in crm.records
    assert len(await writer.pending()) == 30


def started_call(call_id: str = "call-1") -> Call:
    """Offered at 09:00 (created), rung, answered at 09:00:20, ended two minutes later."""
    from dataclasses import replace

    return replace(ended_call(call_id), created_at=T0, ringing_at=T0 + timedelta(seconds=5),
                   answered_at=T0 + timedelta(seconds=20), ended_at=T0 + timedelta(minutes=2))


def test_the_activity_is_dated_when_the_call_started():
    from dataclasses import replace

    assert activity_for(started_call()).started_at == T0
    # a missed call has no answer time; a record built without created_at still has a time
    missed = replace(ended_call(), created_at=None, ringing_at=T0, answered_at=None, outcome=Outcome.MISSED)
    assert activity_for(missed).started_at == T0


async def test_an_activity_pushed_after_an_outage_carries_the_call_start_not_the_push_time(engine):
    crm = RecordingCrm()
    clock = ManualClock(start=T0 + timedelta(minutes=2))  # the call ends
    writer = ActivityWriter(engine, crm, clock, retry_base_s=5, jitter=0)
    crm.down = True
    assert await writer.on_call(started_call()) is False
    await clock.advance(3 * 3600)  # three hours of CRM outage
    crm.down = False
    assert await writer.retry_due() == 1
    assert crm.records["call-1"].started_at == T0
    (row,) = await rows(engine)
    at = row.started_at
    assert (at if at.tzinfo else at.replace(tzinfo=UTC)) == T0  # SQLite reads it back naive (UTC)


async def test_an_activity_stored_without_a_start_is_pushed_with_the_time_it_was_recorded(lite_engine):
    """A row written before the column existed, whose call is gone: about the call's end, still
    better than the push time."""
    crm = RecordingCrm()
    clock = ManualClock(start=T0)
    writer = ActivityWriter(lite_engine, crm, clock, retry_base_s=5, jitter=0)
    crm.down = True
    await writer.on_call(started_call())
    async with lite_engine.begin() as conn:
        await conn.execute(activities.update().values(started_at=None))
    await clock.advance(3 * 3600)
    crm.down = False
    assert await writer.retry_due() == 1
    assert crm.records["call-1"].started_at == T0
