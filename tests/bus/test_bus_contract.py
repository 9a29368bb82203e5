"""One contract, two backends: every test runs on memory:// and on a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from cti.bus import Message, open_bus
from cti.bus.base import Bus

OPTS: dict[str, Any] = {"max_deliveries": 3, "claim_idle_ms": 300, "batch": 16, "block_ms": 50}


@pytest.fixture(params=["memory", "redis"])
async def bus(request) -> AsyncIterator[Bus]:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    b = open_bus(url, **OPTS)
    await b.start()
    try:
        yield b
    finally:
        await b.close()


async def until(cond: Callable[[], bool], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def consuming(bus: Bus, stream: str, group: str, consumer: str, handler) -> AsyncIterator[asyncio.Task]:
    task = asyncio.create_task(bus.consume(stream, group, consumer, handler))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def collector() -> tuple[list[Message], Any]:
    got: list[Message] = []

    async def handler(batch: list[Message]) -> None:
        got.extend(batch)

    return got, handler


async def test_published_entries_reach_a_consumer_in_order(bus: Bus) -> None:
    ids = await bus.publish_many("s", [{"n": i} for i in range(40)])
    ids.append(await bus.publish("s", {"n": 40, "nested": {"a": [1, 2]}}))
    assert len(set(ids)) == 41
    got, handler = collector()
    async with consuming(bus, "s", "g", "c1", handler):
        await until(lambda: len(got) == 41)
    assert [m.data["n"] for m in got] == list(range(41))
    assert got[-1].data["nested"] == {"a": [1, 2]}
    assert [m.id for m in got] == ids
    assert all(m.deliveries == 1 and m.stream == "s" for m in got)


async def test_each_group_gets_every_entry(bus: Bus) -> None:
    await bus.publish_many("s", [{"n": i} for i in range(20)])
    got_a, ha = collector()
    got_b, hb = collector()
    async with consuming(bus, "s", "a", "c1", ha), consuming(bus, "s", "b", "c1", hb):
        await bus.publish("s", {"n": 20})
        await until(lambda: len(got_a) == 21 and len(got_b) == 21)
    assert sorted(m.data["n"] for m in got_a) == sorted(m.data["n"] for m in got_b) == list(range(21))


async def test_consumers_of_one_group_share_the_entries(bus: Bus) -> None:
    seen: dict[str, list[int]] = {"c1": [], "c2": []}

    def handler_for(name: str):
        async def handler(batch: list[Message]) -> None:
            seen[name].extend(m.data["n"] for m in batch)
            await asyncio.sleep(0.02)  # slow enough that the other consumer gets a turn

        return handler

    async with consuming(bus, "s", "g", "c1", handler_for("c1")), consuming(bus, "s", "g", "c2", handler_for("c2")):
        await asyncio.sleep(0.1)  # both consumers are reading
        for i in range(60):
            await bus.publish("s", {"n": i})
        await until(lambda: len(seen["c1"]) + len(seen["c2"]) >= 60)
        await asyncio.sleep(0.1)
    assert sorted(seen["c1"] + seen["c2"]) == list(range(60))  # each exactly once
    assert seen["c1"] and seen["c2"]
    assert await bus.lag("s", "g") == 0


async def test_entries_are_acknowledged_only_after_the_handler_returns(bus: Bus) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def handler(batch: list[Message]) -> None:
        started.set()
        await release.wait()

    await bus.publish_many("s", [{"n": i} for i in range(5)])
    assert await bus.lag("s", "g") == 5  # no group yet: everything is lag
    async with consuming(bus, "s", "g", "c1", handler):
        await asyncio.wait_for(started.wait(), 5)
        assert await bus.lag("s", "g") == 5  # delivered but still pending
        release.set()
        for _ in range(200):
            if await bus.lag("s", "g") == 0:
                break
            await asyncio.sleep(0.01)
    assert await bus.lag("s", "g") == 0
    assert await bus.dead_letters("s") == []


async def test_a_poison_entry_is_retried_then_dead_lettered_while_the_rest_flows(bus: Bus) -> None:
    calls: dict[int, int] = {}
    done: list[int] = []

    async def handler(batch: list[Message]) -> None:
        for m in batch:
            calls[m.data["n"]] = calls.get(m.data["n"], 0) + 1
        if any(m.data.get("poison") for m in batch):
            raise ValueError("cannot handle poison")
        done.extend(m.data["n"] for m in batch)

    await bus.publish_many("s", [{"n": i, "poison": i == 3} for i in range(8)])
    with capture_logs() as logs:
        async with consuming(bus, "s", "g", "c1", handler):
            await until(lambda: len(done) == 7)
            for _ in range(200):
                if await bus.dead_letters("s"):
                    break
                await asyncio.sleep(0.01)
            await bus.publish("s", {"n": 99})  # later entries still flow
            await until(lambda: 99 in done)
    assert sorted(done) == [0, 1, 2, 4, 5, 6, 7, 99]  # each neighbour handled successfully once
    assert calls[3] == OPTS["max_deliveries"]  # the batch delivery counts as one
    dead = await bus.dead_letters("s")
    assert len(dead) == 1
    assert dead[0].data["data"] == {"n": 3, "poison": True}
    assert dead[0].data["deliveries"] == OPTS["max_deliveries"]
    assert "cannot handle poison" in dead[0].data["error"]
    assert dead[0].data["group"] == "g"
    assert await bus.lag("s", "g") == 0
    assert any(e["event"] == "bus_dead_letter" for e in logs)


async def test_a_restarted_consumer_rereads_its_own_pending_entries(bus: Bus) -> None:
    started = asyncio.Event()

    async def stuck(batch: list[Message]) -> None:
        started.set()
        await asyncio.Event().wait()  # cancelled mid-batch, like a crash

    await bus.publish_many("s", [{"n": i} for i in range(5)])
    async with consuming(bus, "s", "g", "c1", stuck):
        await asyncio.wait_for(started.wait(), 5)
    assert await bus.lag("s", "g") == 5

    got, handler = collector()
    async with consuming(bus, "s", "g", "c1", handler):  # same name: crash recovery
        await until(lambda: len(got) == 5)
        await asyncio.sleep(0.05)
    assert sorted(m.data["n"] for m in got) == list(range(5))
    assert all(m.deliveries == 2 for m in got)
    assert await bus.lag("s", "g") == 0


async def test_idle_entries_of_a_dead_consumer_are_claimed_by_another(bus: Bus) -> None:
    started = asyncio.Event()

    async def stuck(batch: list[Message]) -> None:
        started.set()
        await asyncio.Event().wait()

    await bus.publish_many("s", [{"n": i} for i in range(4)])
    async with consuming(bus, "s", "g", "dead-one", stuck):
        await asyncio.wait_for(started.wait(), 5)
    got, handler = collector()
    async with consuming(bus, "s", "g", "survivor", handler):
        await until(lambda: len(got) == 4, within=10)
    assert sorted(m.data["n"] for m in got) == list(range(4))
    assert all(m.deliveries >= 2 for m in got)
    assert await bus.lag("s", "g") == 0


async def test_an_entry_that_keeps_killing_its_consumer_is_dead_lettered(bus: Bus) -> None:
    attempts = 0

    async def crashes(batch: list[Message]) -> None:
        nonlocal attempts
        attempts += 1
        raise asyncio.CancelledError  # the process dies with the entry in flight

    await bus.publish("s", {"n": 1})
    for _ in range(OPTS["max_deliveries"] + 1):
        task = asyncio.create_task(bus.consume("s", "g", "c1", crashes))
        await asyncio.sleep(0.15)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert attempts == OPTS["max_deliveries"]
    dead = await bus.dead_letters("s")
    assert [d.data["data"] for d in dead] == [{"n": 1}]
    assert await bus.lag("s", "g") == 0


async def test_lag_counts_undelivered_and_pending_entries(bus: Bus) -> None:
    assert await bus.lag("nothing", "g") == 0
    await bus.publish_many("s", [{"n": i} for i in range(7)])
    got, handler = collector()
    async with consuming(bus, "s", "g", "c1", handler):
        await until(lambda: len(got) == 7)
        for _ in range(100):
            if await bus.lag("s", "g") == 0:
                break
            await asyncio.sleep(0.01)
    assert await bus.lag("s", "g") == 0
    await bus.publish_many("s", [{"n": i} for i in range(3)])
    assert await bus.lag("s", "g") == 3
    assert await bus.lag("s", "other") == 10  # a group that never read sees everything
    assert await bus.ping() is True


async def test_a_lingering_consumer_reads_fewer_larger_batches_and_loses_nothing(bus: Bus) -> None:
    sizes: list[int] = []
    got: list[Message] = []

    async def handler(batch: list[Message]) -> None:
        sizes.append(len(batch))
        got.extend(batch)

    task = asyncio.create_task(bus.consume("s-linger", "g", "c1", handler, linger_ms=200))
    try:
        await bus.publish("s-linger", {"n": 0})
        await until(lambda: len(got) == 1)
        for n in range(1, 31):  # arrive one by one while the consumer lingers
            await bus.publish("s-linger", {"n": n})
            await asyncio.sleep(0.002)
        await until(lambda: len(got) == 31)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert [m.data["n"] for m in got] == list(range(31))
    assert sizes[0] == 1 and len(sizes) <= 3  # not one read per entry
    assert await bus.lag("s-linger", "g") == 0
