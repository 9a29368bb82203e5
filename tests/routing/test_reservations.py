"""Agent reservations: in memory, and on a real Redis shared by two processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from cti.routing.reservations import MemoryReservations, RedisReservations

ROOT = Path(__file__).resolve().parents[2]


async def test_memory_reservations_capacity_refresh_and_ttl():
    t = [0.0]
    r = MemoryReservations(now=lambda: t[0])
    assert await r.reserve("alice", "c1", ttl_s=10)
    assert not await r.reserve("alice", "c2", ttl_s=10)
    assert await r.reserve("alice", "c1", ttl_s=100)     # same call: refresh
    t[0] = 50
    assert not await r.reserve("alice", "c2")
    t[0] = 101
    assert await r.reserve("alice", "c2")                 # c1 expired
    assert await r.reserve("blend", "x", capacity=2) and await r.reserve("blend", "y", capacity=2)
    assert not await r.reserve("blend", "z", capacity=2)
    await r.release("blend", "x")
    assert await r.held("blend") == ["y"]


@pytest.mark.redis
async def test_redis_reservations_basics(redis_url):
    client = aioredis.Redis.from_url(redis_url)
    r = RedisReservations(client, tenant="t1")
    try:
        assert await r.reserve("alice", "c1", ttl_s=0.3)
        assert not await r.reserve("alice", "c2")
        assert await r.reserve("alice", "c1")             # refresh by the holder
        await r.release("alice", "c1")
        assert await r.reserve("alice", "c2", ttl_s=0.2)
        assert await r.held("alice") == ["c2"]
        await asyncio.sleep(0.3)                          # a crashed node's hold expires
        assert await r.held("alice") == []
        assert await r.reserve("alice", "c3")
        assert 0 < await client.pttl(r.key("alice")) <= 30_000   # the key itself expires too
        assert await r.reserve("blend", "x", capacity=2) and await r.reserve("blend", "y", capacity=2)
        assert not await r.reserve("blend", "z", capacity=2)
    finally:
        await client.aclose()


@pytest.mark.redis
@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_a_batch_of_holds_and_frees_runs_in_order_in_one_call(redis_url, store):
    from cti.routing.reservations import Free, Hold

    client = aioredis.Redis.from_url(redis_url)
    r = MemoryReservations() if store == "memory" else RedisReservations(client, tenant="t2")
    try:
        if store == "redis":
            await client.script_flush()  # a restarted Redis has forgotten the script
        ops = [Hold("alice", "c1"), Hold("alice", "c2"), Free("alice", "c1"), Hold("alice", "c2"),
               Hold("blend", "x", capacity=2), Hold("blend", "y", capacity=2), Hold("blend", "z", capacity=2)]
        assert await r.apply(ops) == [True, False, True, True, True, True, False]
        assert await r.held("alice") == ["c2"] and await r.held("blend") == ["x", "y"]
        assert await r.apply([]) == []
    finally:
        await client.aclose()


@pytest.mark.redis
def test_two_processes_never_double_book_an_agent(redis_url):
    procs = [subprocess.Popen([sys.executable, "-m", "tests.routing.resv_worker", redis_url, node, "3000"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for node in ("node-a", "node-b")]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["violations"] == 0 for r in results), results
    assert all(r["won"] > 0 for r in results)
    # they really competed: some reservations were refused because the other node held the agent
    assert sum(r["lost"] for r in results) > 0, results


def test_open_reservations_by_bus_url():
    from cti.routing.reservations import open_reservations

    assert isinstance(open_reservations("memory://"), MemoryReservations)
    assert isinstance(open_reservations("redis://127.0.0.1:1/0"), RedisReservations)
    with pytest.raises(ValueError, match="no reservations backend"):
        open_reservations("kafka://x")
