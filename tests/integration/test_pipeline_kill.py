"""A pipeline consumer SIGKILLed mid-load loses nothing and duplicates nothing (Redis + PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

from cti.calls.repo import CallRepo, call_from_row
from cti.calls.state import fold
from cti.store import migrate
from cti.store.db import Database
from cti.store.tables import call_events, calls
from tests.integration.callgen import many_calls

ROOT = Path(__file__).resolve().parents[2]
CALLS = 1200
SEED = 42

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]


def _spawn(module: str, *args: str, log: Path) -> subprocess.Popen:
    """Output goes to a file, never a pipe: a full pipe would stall the child."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


async def _count(db: Database, table) -> int:
    async with db.engine.connect() as c:
        return (await c.execute(select(func.count()).select_from(table))).scalar_one()


async def test_sigkilled_consumer_restarts_without_loss_or_duplicates(
    redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    await migrate.upgrade_async(pg_url)
    expected = many_calls(CALLS, seed=SEED)
    total_events = sum(len(c) for c in expected)
    db = Database(pg_url)
    await db.connect()
    procs: list[subprocess.Popen] = []
    try:
        clog, plog = tmp_path / "consumer.log", tmp_path / "publisher.log"
        consumer = _spawn("tests.integration.pipeline_consumer", redis_url, pg_url, "node-1", log=clog)
        procs.append(consumer)
        publisher = _spawn("tests.integration.pipeline_publisher", redis_url, str(CALLS), str(SEED), log=plog)
        procs.append(publisher)

        # kill the consumer once it is well into the load (it has stored some, not all)
        deadline = time.monotonic() + 60
        while await _count(db, call_events) < total_events // 4:
            assert consumer.poll() is None, _tail(clog)
            assert time.monotonic() < deadline, "the consumer made no progress"
            await asyncio.sleep(0.02)
        consumer.send_signal(signal.SIGKILL)
        consumer.wait()
        stored_at_kill = await _count(db, call_events)
        assert stored_at_kill < total_events

        consumer = _spawn("tests.integration.pipeline_consumer", redis_url, pg_url, "node-1", log=clog)
        procs.append(consumer)
        assert publisher.wait(60) == 0, _tail(plog)

        r = redis.Redis.from_url(redis_url)
        deadline = time.monotonic() + 90
        while True:
            groups = {g["name"].decode(): g for g in r.xinfo_groups("events")}
            g = groups.get("store")
            if g and g["lag"] == 0 and g["pending"] == 0:
                break
            assert consumer.poll() is None, _tail(clog)
            assert time.monotonic() < deadline, f"consumer did not catch up: {g}"
            await asyncio.sleep(0.05)
        assert r.xlen("events:dead") == 0
        r.close()

        # exactly the published events, each once; exactly one correct record per call
        assert await _count(db, call_events) == total_events
        assert await _count(db, calls) == CALLS
        repo = CallRepo(db)
        rows = {row["call_id"]: row for row in await repo.list_calls({}, limit=CALLS + 10)}
        for evs in expected:
            assert call_from_row(rows[evs[0].call_id]) == fold(evs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        await db.close()
