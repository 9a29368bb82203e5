"""The Redis bus through a TCP proxy: cut, refused and silently hanging connections."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlparse

import pytest
from structlog.testing import capture_logs

from cti.bus import Message
from cti.bus.redis import RedisBus
from tests.faults.proxy import TcpProxy

pytestmark = pytest.mark.redis


@pytest.fixture
async def proxied(redis_url: str):
    u = urlparse(redis_url)
    proxy = TcpProxy(u.hostname or "127.0.0.1", u.port or 6379)
    port = await proxy.start()
    bus = RedisBus(f"redis://127.0.0.1:{port}/0", block_ms=100, claim_idle_ms=60_000, socket_timeout_s=0.5,
                   health_check_interval_s=1)
    direct = RedisBus(redis_url)
    try:
        yield proxy, bus, direct
    finally:
        await bus.close()
        await direct.close()
        await proxy.close()


@contextlib.asynccontextmanager
async def _consuming(bus: RedisBus):
    """Consume stream "s" (group "g") into a list of the entries' "n" while the block runs."""
    got: list[int] = []

    async def handler(batch: list[Message]) -> None:
        got.extend(m.data["n"] for m in batch)

    task = asyncio.create_task(bus.consume("s", "g", "c1", handler))
    try:
        yield got, task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _wait(cond, within: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not cond():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.02)


async def test_consumer_survives_a_cut_and_an_outage_and_loses_nothing(proxied) -> None:
    proxy, bus, direct = proxied
    with capture_logs() as logs:
        async with _consuming(bus) as (got, task):
            await direct.publish_many("s", [{"n": i} for i in range(10)])
            await _wait(lambda: len(set(got)) == 10, 5)
            proxy.refuse(True)
            proxy.cut()
            assert await bus.ping() is False
            await direct.publish_many("s", [{"n": i} for i in range(10, 20)])
            await asyncio.sleep(0.5)
            assert not task.done()  # the loop is still alive, retrying
            proxy.refuse(False)
            await _wait(lambda: set(got) == set(range(20)), 15)
            assert await bus.ping() is True
    assert any(e["event"] == "bus_connection_lost" for e in logs)
    assert any(e["event"] == "bus_reconnected" for e in logs)
    assert await direct.lag("s", "g") == 0


async def test_a_silently_hanging_connection_is_detected_by_the_socket_timeout(proxied) -> None:
    proxy, bus, direct = proxied
    with capture_logs() as logs:
        async with _consuming(bus) as (got, _task):
            await direct.publish("s", {"n": 0})
            await _wait(lambda: got == [0], 5)
            proxy.blackhole(True)  # no FIN, no RST: only a timeout can notice
            await direct.publish("s", {"n": 1})
            await asyncio.sleep(bus.socket_timeout_s + 0.5)
            assert got == [0]
            proxy.blackhole(False)
            await _wait(lambda: 1 in got, 15)
    lost = [e for e in logs if e["event"] == "bus_connection_lost"]
    assert lost and "Timeout" in lost[0]["error"]


async def test_ping_is_false_when_redis_is_unreachable() -> None:
    from tests.servers import free_port

    bus = RedisBus(f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=0.5)
    assert await bus.ping() is False
    await bus.close()


async def test_streams_are_capped_at_about_maxlen(redis_url: str) -> None:
    bus = RedisBus(redis_url, maxlen=100)
    await bus.publish_many("s", [{"n": i} for i in range(1000)])
    for i in range(300):
        await bus.publish("s", {"n": i})
    n = await bus.client.xlen("s")
    assert 100 <= n < 400  # approximate trimming keeps whole radix-tree nodes
    await bus.close()


async def test_long_gone_consumers_with_nothing_pending_are_forgotten(redis_url: str) -> None:
    bus = RedisBus(redis_url)
    await bus.client.xgroup_create("s", "g", id="0", mkstream=True)
    await bus.publish("s", {"n": 1})
    await bus.client.xgroup_createconsumer("s", "g", "old-node")
    await bus.client.xreadgroup("g", "busy-node", {"s": ">"}, count=1)  # holds a pending entry
    bus.forget_consumers_after_ms = 100
    await bus._forget_dead_consumers("s", "g", "me")
    assert len(await bus.client.xinfo_consumers("s", "g")) == 2  # nobody idle long enough yet
    await asyncio.sleep(0.2)
    await bus._forget_dead_consumers("s", "g", "me")
    names = {c["name"] for c in await bus.client.xinfo_consumers("s", "g")}
    assert names == {b"busy-node"}  # its pending entry keeps it (XAUTOCLAIM's job, not ours)
    await bus.close()


async def test_acknowledgements_ride_on_the_next_read_and_are_flushed_when_the_consumer_stops(
    redis_url: str,
) -> None:
    # a handled batch is acknowledged with the next XREADGROUP (one round trip per batch); one
    # handled just before the consumer is cancelled is acknowledged on the way out, so a
    # draining node leaves no handled entry for another node to handle again
    bus = RedisBus(redis_url, block_ms=2000)
    await bus.client.xgroup_create("s", "g", id="0", mkstream=True)
    handled: list[int] = []

    async def handler(batch: list[Message]) -> None:
        handled.extend(m.data["n"] for m in batch)

    async def pending() -> int:
        return int((await bus.client.xpending("s", "g"))["pending"])

    task = asyncio.create_task(bus.consume("s", "g", "c1", handler))
    try:
        await bus.publish("s", {"n": 1})
        await _wait(lambda: handled == [1], 2)
        await asyncio.sleep(0.1)
        assert await pending() == 0  # acknowledged by the blocking read now waiting (2 s)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # a handler cancelled mid-batch: the entries acknowledged are exactly those handled
    gate = asyncio.Event()

    async def slow_second(batch: list[Message]) -> None:
        for m in batch:
            if m.data["n"] == 3:
                await gate.wait()
            handled.append(m.data["n"])

    task = asyncio.create_task(bus.consume("s", "g", "c1", slow_second))
    try:
        await bus.publish("s", {"n": 2})
        await _wait(lambda: handled == [1, 2], 2)
        await bus.publish("s", {"n": 3})  # the read that carries 2's XACK brings 3, which hangs
        await asyncio.sleep(0.1)
        assert await pending() == 1  # 2 acknowledged with that read; 3 in the handler
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert await pending() == 1  # 3 was never handled: left for another consumer
    await bus.close()


async def test_a_lingering_consumer_acknowledges_before_it_waits(redis_url: str) -> None:
    bus = RedisBus(redis_url, block_ms=2000)
    await bus.client.xgroup_create("s", "g", id="0", mkstream=True)
    handled: list[int] = []

    async def handler(batch: list[Message]) -> None:
        handled.extend(m.data["n"] for m in batch)

    task = asyncio.create_task(bus.consume("s", "g", "c1", handler, linger_ms=5000))
    try:
        await bus.publish("s", {"n": 1})
        await _wait(lambda: handled == [1], 2)
        await asyncio.sleep(0.1)
        assert int((await bus.client.xpending("s", "g"))["pending"]) == 0  # not after the 5 s wait
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await bus.close()
