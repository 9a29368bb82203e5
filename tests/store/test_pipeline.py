"""EventPipeline: bus events -> call_events + calls -> call_update messages."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select
from structlog.testing import capture_logs

from cti.bus import Message, open_bus, streams
from cti.calls.pipeline import EventPipeline, parse_event
from cti.calls.repo import call_from_row
from cti.calls.state import fold
from cti.metrics import Metrics
from cti.store import migrate
from cti.store.db import Database, is_transient
from cti.store.tables import call_events
from tests.integration.callgen import interleaved, many_calls


@pytest.fixture
async def db(store_url: str):
    await migrate.upgrade_async(store_url)
    d = Database(store_url)
    await d.connect()
    try:
        yield d
    finally:
        await d.close()


async def _drain(bus, pipe: EventPipeline) -> None:
    task = asyncio.create_task(pipe.run())
    try:
        for _ in range(1000):
            await asyncio.sleep(0.01)
            if await bus.lag(streams.EVENTS, pipe.group) == 0:
                return
        raise AssertionError("pipeline did not drain the events stream")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _event_rows(db: Database) -> int:
    async with db.engine.connect() as c:
        return (await c.execute(select(func.count()).select_from(call_events))).scalar_one()


async def test_every_call_record_is_the_fold_of_its_events(db: Database) -> None:
    bus = open_bus("memory://", batch=64)
    metrics = Metrics()
    calls = many_calls(60, seed=3)
    evs = interleaved(calls, seed=3)
    dupes = evs[::7]
    await bus.publish_many(streams.EVENTS, [e.to_dict() for e in evs + dupes])
    await bus.publish(streams.EVENTS, {"provider": "asterisk", "kind": "answered", "junk": "x" * 500})
    await bus.publish(streams.EVENTS, {**evs[0].to_dict(), "event_id": "e" * 65})
    pipe = EventPipeline(bus, db, consumer="t1", metrics=metrics)
    with capture_logs() as logs:
        await _drain(bus, pipe)
    for c in calls:
        row = await pipe.repo.get_call(c[0].call_id)
        assert row is not None and call_from_row(row) == fold(c)
    assert await _event_rows(db) == len(evs)
    rejected = [e for e in logs if e["event"] == "event_rejected"]
    assert len(rejected) == 2 and rejected[0]["provider"] == "asterisk"
    assert len(rejected[0]["snippet"]) == 200
    assert "longer than 64" in rejected[1]["error"]
    dead = await bus.dead_letters(streams.EVENTS)
    assert len(dead) == 2 and dead[0].data["data"]["provider"] == "asterisk"
    assert metrics.events_failed.labels(stage="pipeline")._value.get() == 2
    assert pipe.stats.rejected == 2 and pipe.stats.events == len(evs) + len(dupes)
    # the last call_update of each call is its final record
    updates = await _read_all(bus, streams.CALLS)
    last = {u["call"]["call_id"]: u["call"] for u in updates}
    assert all(u["type"] == "call_update" for u in updates)
    assert {cid: c["state"] for cid, c in last.items()} == {c[0].call_id: "ended" for c in calls}
    assert all(last[c[0].call_id] == fold(c).to_dict() for c in calls)


async def _read_all(bus, stream: str) -> list[dict]:
    got: list[dict] = []

    async def h(batch: list[Message]) -> None:
        got.extend(m.data for m in batch)

    task = asyncio.create_task(bus.consume(stream, "reader", "r", h))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if await bus.lag(stream, "reader") == 0:
            break
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return got


async def test_a_redelivered_batch_republishes_and_changes_nothing(db: Database) -> None:
    bus = open_bus("memory://")
    evs = many_calls(5, seed=1)
    batch = [Message(f"{i}-0", streams.EVENTS, e.to_dict()) for i, e in enumerate(e for c in evs for e in c)]
    pipe = EventPipeline(bus, db, consumer="t1")
    await pipe.handle(batch)
    await pipe.handle(batch)  # same process, folder already has every event
    fresh = EventPipeline(bus, db, consumer="t2")
    await fresh.handle(batch)  # after a restart: folder empty, events already stored
    assert await _event_rows(db) == sum(len(c) for c in evs)
    updates = await _read_all(bus, streams.CALLS)
    assert len(updates) == 15
    for c in evs:
        assert call_from_row(await pipe.repo.get_call(c[0].call_id)) == fold(c)


async def test_a_late_event_for_a_call_unknown_to_this_process_folds_with_stored_events(db: Database) -> None:
    bus = open_bus("memory://")
    c = many_calls(1, seed=9)[0]
    first = EventPipeline(bus, db, consumer="a")
    await first.handle([Message("1-0", streams.EVENTS, e.to_dict()) for e in c[:-1]])
    later = EventPipeline(bus, db, consumer="b")  # another node, or after eviction/restart
    await later.handle([Message("2-0", streams.EVENTS, c[-1].to_dict())])
    assert later.stats.reloads == 1
    assert call_from_row(await later.repo.get_call(c[0].call_id)) == fold(c)


async def test_an_unreachable_store_is_retried_not_dead_lettered(db: Database, monkeypatch) -> None:
    bus = open_bus("memory://")
    pipe = EventPipeline(bus, db, consumer="t1", max_store_backoff_s=0.05)
    real = pipe.repo.insert_events
    failures = 3

    async def flaky(*a, **kw):
        nonlocal failures
        if failures:
            failures -= 1
            raise sa_exc.OperationalError("INSERT", {}, OSError("connection refused"))
        return await real(*a, **kw)

    monkeypatch.setattr(pipe.repo, "insert_events", flaky)
    c = many_calls(1)[0]
    with capture_logs() as logs:
        await pipe.handle([Message("1-0", streams.EVENTS, e.to_dict()) for e in c])
    assert pipe.stats.store_retries == 3
    assert sum(e["event"] == "store_unavailable" for e in logs) == 3
    assert call_from_row(await pipe.repo.get_call(c[0].call_id)) == fold(c)


async def test_a_batch_that_fails_for_good_leaves_nothing_half_done(db: Database, monkeypatch) -> None:
    bus = open_bus("memory://")
    pipe = EventPipeline(bus, db, consumer="t1")
    c = many_calls(1)[0]
    await pipe.handle([Message("1-0", streams.EVENTS, e.to_dict()) for e in c[:3]])

    async def broken(*a, **kw):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pipe.repo, "upsert_calls", broken)
    with pytest.raises(RuntimeError):
        await pipe.handle([Message("2-0", streams.EVENTS, e.to_dict()) for e in c[3:]])
    monkeypatch.undo()
    assert await _event_rows(db) == 3  # the failed batch's inserts were rolled back
    assert not pipe.folder.known(c[0].call_id)  # and the folder forgot what it saw
    await pipe.handle([Message("3-0", streams.EVENTS, e.to_dict()) for e in c[3:]])
    assert call_from_row(await pipe.repo.get_call(c[0].call_id)) == fold(c)


def test_parse_and_transient_classification() -> None:
    e = many_calls(1)[0][0]
    assert parse_event(e.to_dict()) == e
    with pytest.raises(ValueError, match="missing field 'event_id'"):
        parse_event({"provider": "x"})
    with pytest.raises(ValueError, match="JSON object"):
        parse_event(["not", "a", "dict"])
    with pytest.raises(ValueError, match="from_number"):
        parse_event({**e.to_dict(), "from_number": "1" * 40})
    assert is_transient(sa_exc.OperationalError("x", {}, OSError()))
    assert is_transient(ConnectionRefusedError())
    assert not is_transient(sa_exc.IntegrityError("x", {}, Exception()))
    assert not is_transient(ValueError())


async def test_a_node_whose_cached_fold_is_stale_reloads_the_call(db: Database) -> None:
    """Events of one call reaching two nodes in turn: neither writes a fold that misses one."""
    bus = open_bus("memory://")
    c = many_calls(1, seed=5)[0]
    a = EventPipeline(bus, db, consumer="a")
    b = EventPipeline(bus, db, consumer="b")
    for i, e in enumerate(c):
        node = a if i % 2 == 0 else b
        await node.handle([Message(f"{i}-0", streams.EVENTS, e.to_dict())])
        row = await node.repo.get_call(c[0].call_id)
        assert call_from_row(row) == fold(c[: i + 1])


async def test_two_nodes_consuming_one_group_concurrently_agree_with_the_fold(db: Database) -> None:
    bus = open_bus("memory://", batch=8)
    calls = many_calls(80, seed=11)
    await bus.publish_many(streams.EVENTS, [e.to_dict() for e in interleaved(calls, seed=11, window=10)])
    a = EventPipeline(bus, db, consumer="a")
    b = EventPipeline(bus, db, consumer="b")
    tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
    try:
        for _ in range(2000):
            await asyncio.sleep(0.01)
            if await bus.lag(streams.EVENTS, "store") == 0:
                break
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
    assert a.stats.events and b.stats.events  # both nodes did part of the work
    for evs in calls:
        assert call_from_row(await a.repo.get_call(evs[0].call_id)) == fold(evs)
