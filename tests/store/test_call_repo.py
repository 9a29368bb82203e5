"""Call persistence on SQLite and PostgreSQL: idempotent events, fold-only upserts, queries."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, update

from cti.calls.repo import CallRepo, call_from_row
from cti.calls.state import fold
from cti.store import migrate
from cti.store.db import Database
from cti.store.tables import call_events, calls
from tests.integration.callgen import many_calls


@pytest.fixture
async def repo(store_url: str):
    await migrate.upgrade_async(store_url)
    db = Database(store_url)
    await db.connect()
    try:
        yield CallRepo(db)
    finally:
        await db.close()


async def _count(repo: CallRepo, table) -> int:
    async with repo.db.engine.connect() as c:
        return (await c.execute(select(func.count()).select_from(table))).scalar_one()


async def test_inserting_the_same_events_twice_stores_them_once(repo: CallRepo) -> None:
    evs = [e for c in many_calls(20) for e in c]
    await repo.insert_events(evs)
    await repo.insert_events(evs[::-1] + evs[:5])
    assert await _count(repo, call_events) == len(evs)
    loaded = await repo.load_events([evs[0].call_id, "unknown"])
    assert loaded["unknown"] == []
    assert sorted(e.event_id for e in loaded[evs[0].call_id]) == sorted(
        e.event_id for e in evs if e.call_id == evs[0].call_id
    )
    assert fold(loaded[evs[0].call_id]) == fold(e for e in evs if e.call_id == evs[0].call_id)


async def test_upsert_writes_the_fold_and_reads_back_the_same_call(repo: CallRepo) -> None:
    records = [fold(c) for c in many_calls(30)]
    await repo.upsert_calls(records)
    await repo.upsert_calls(records)  # idempotent
    assert await _count(repo, calls) == 30
    for r in records:
        row = await repo.get_call(r.call_id)
        assert row is not None
        assert call_from_row(row) == r
        assert row["created_at"].tzinfo is not None


async def test_upsert_never_clobbers_columns_other_stages_own(repo: CallRepo) -> None:
    evs = many_calls(1)[0]
    partial = fold(evs[:2])
    await repo.upsert_calls([partial])
    async with repo.db.engine.begin() as c:
        await c.execute(
            update(calls).where(calls.c.call_id == partial.call_id).values(
                contact_id="c-1", account_id="a-1", priority=7, priority_reason="vip",
                disposition="sale", notes="called back", error="crm timeout",
            )
        )
    final = fold(evs)
    await repo.upsert_calls([final])
    row = await repo.get_call(final.call_id)
    assert row is not None
    assert call_from_row(row) == final
    assert (row["contact_id"], row["account_id"], row["priority"], row["priority_reason"]) == ("c-1", "a-1", 7, "vip")
    assert (row["disposition"], row["notes"], row["error"]) == ("sale", "called back", "crm timeout")


async def test_a_stale_fold_never_replaces_a_newer_row(repo: CallRepo) -> None:
    evs = many_calls(1)[0]
    await repo.upsert_calls([fold(evs)])
    await repo.upsert_calls([fold(evs[:2])])  # a late writer with fewer events
    row = await repo.get_call(evs[0].call_id)
    assert row is not None and row["state"] == "ended"
    # in one statement, the record of the most events wins
    other = many_calls(2)[1]
    await repo.upsert_calls([fold(other), fold(other[:1])])
    assert (await repo.get_call(other[0].call_id))["events"] == len(other)


async def test_list_calls_filters_and_pages(repo: CallRepo) -> None:
    records = [fold(c) for c in many_calls(40)]
    await repo.upsert_calls(records)
    page1 = await repo.list_calls({}, limit=15)
    page2 = await repo.list_calls({}, limit=15, offset=15)
    assert len(page1) == 15 and len(page2) == 15
    assert not {r["call_id"] for r in page1} & {r["call_id"] for r in page2}
    assert [r["created_at"] for r in page1] == sorted((r["created_at"] for r in page1), reverse=True)

    alice = await repo.list_calls({"agent": "alice"}, limit=100)
    assert {r["call_id"] for r in alice} == {c.call_id for c in records if c.agent == "alice"}
    team = await repo.list_calls({"agents": ["alice", "bob"], "outcome": "answered"}, limit=100)
    assert {r["call_id"] for r in team} == {
        c.call_id for c in records if c.agent in ("alice", "bob") and str(c.outcome) == "answered"
    }
    number = records[3].from_number
    assert [r["call_id"] for r in await repo.list_calls({"number": number})] == [records[3].call_id]
    mid = sorted(c.created_at for c in records)[20]
    since = await repo.list_calls({"since": mid, "until": datetime(2030, 1, 1, tzinfo=UTC)}, limit=100)
    assert len(since) == 20
    assert await repo.count_calls({"queue": "sales"}) == sum(1 for c in records if c.queue == "sales")
    assert await repo.count_calls({"ended": False}) == 0
    with pytest.raises(ValueError, match="unknown call filter 'colour'"):
        await repo.list_calls({"colour": "red"})
    assert await repo.get_call("nope") is None
    assert await repo.get_call(records[0].call_id, tenant="other") is None


async def test_large_batches_are_one_statement_per_chunk(repo: CallRepo) -> None:
    evs = [e for c in many_calls(400) for e in c]  # ~2800 rows: several chunks
    await repo.insert_events(evs)
    recs = [fold(c) for c in many_calls(400)]
    await repo.upsert_calls([*recs, replace(recs[0])])
    assert await _count(repo, call_events) == len(evs)
    assert await _count(repo, calls) == 400


async def test_an_ended_call_takes_its_activitys_contact_unless_it_has_one(repo: CallRepo) -> None:
    from cti.app import _CALL_CONTACT_FROM_ACTIVITY
    from cti.store.tables import activities

    at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    base = {"tenant": "default", "provider": "sim", "direction": "inbound", "state": "ended", "created_at": at}
    async with repo.db.engine.begin() as c:
        await c.execute(calls.insert(), [
            {**base, "call_id": cid, "provider_call_id": cid, "contact_id": contact, "account_id": account}
            for cid, contact, account in [("new", None, None), ("kept", "agent-chose", "a0"),
                                          ("unknown", None, None), ("later", None, None)]
        ])
        await c.execute(activities.insert(), [
            {"call_id": cid, "tenant": "default", "subject": "s", "direction": "inbound", "created_at": at,
             "updated_at": at, "contact_id": contact, "account_id": account}
            for cid, contact, account in [("new", "c1", "a1"), ("kept", "c2", "a2"), ("unknown", None, None),
                                          ("later", "c3", "a3")]
        ])
        await c.execute(_CALL_CONTACT_FROM_ACTIVITY, {"ended": ["new", "kept", "unknown"]})
    async with repo.db.engine.connect() as c:
        rows = {r.call_id: (r.contact_id, r.account_id)
                for r in await c.execute(select(calls.c.call_id, calls.c.contact_id, calls.c.account_id))}
    assert rows == {"new": ("c1", "a1"), "kept": ("agent-chose", "a0"), "unknown": (None, None),
                    "later": (None, None)}  # not in the batch
