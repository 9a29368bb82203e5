"""A transcription worker SIGKILLed in the middle of a job.

A gateway (in-process: simulator recording every call, Redis, PostgreSQL) ingests the
recording and enqueues the job; two `cti worker` processes consume the jobs. The worker
that takes the job is killed while it transcribes. Expected behaviour: the job stays
pending in Redis under the dead worker's name; the other worker claims it once it has
been idle `bus.claim_idle_ms`, waits for the dead worker's lease to lapse
(`transcribe.lease_s` after its last heartbeat), then transcribes it. The result is
written once: one `transcripts` row, `done`, with text; the job is acknowledged and
nothing is dead-lettered; the call has exactly one record and one activity.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from cti.bus import streams as S
from cti.store.tables import transcripts
from tests.faults.checks import assert_each_completed_call_once, wait_settled
from tests.faults.conftest import (
    ROOT,
    end_process,
    fault_settings,
    inject_calls,
    prepare_store,
    spawn_cti,
    start_app,
    tail,
    wait_for,
    write_toml,
)

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

RECORDING = ROOT / "tests" / "data" / "calls" / "c01_billing_dispute.mono.wav"


def _started(log: Path) -> bool:
    return "transcription_worker_started" in tail(log, 100_000)


async def test_worker_killed_mid_job_its_job_is_reclaimed_and_written_once(
    redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    settings = fault_settings(
        tmp_path, bus_url=redis_url, store_url=pg_url,
        sim={"record": True, "recording_files": [str(RECORDING)]},
        transcribe={"enabled": True, "gateway_worker": False, "storage": str(tmp_path / "recordings"),
                    "model": "tiny.en", "language": "en", "lease_s": 3.0, "cpu_threads": 1},
        bus={"claim_idle_ms": 1000},
    )
    await prepare_store(settings)
    cfg = write_toml(settings, tmp_path / "cti.toml")
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    workers = [spawn_cti("worker", "--config", str(cfg), log=log) for log in logs]
    app = None
    r = redis.Redis.from_url(redis_url)
    try:
        await wait_for(lambda: all(_started(log) for log in logs), 30, "both workers to load the model", every=0.2)
        app = await start_app(settings, prepare=False)
        inject_calls(app, 1)

        async def running() -> bool:
            for p, log in zip(workers, logs, strict=True):
                assert p.poll() is None, tail(log)
            async with app.db.engine.connect() as conn:
                st = (await conn.execute(sa.select(transcripts.c.status))).scalar()
            return st == "running"

        await wait_for(running, 20, "a worker to start the job", every=0.05)
        # the worker holding the job, by its bus consumer name (hostname-pid)
        pending = r.xpending_range(S.JOBS_TRANSCRIBE, "transcribe", min="-", max="+", count=10)
        assert len(pending) == 1, pending
        holder = pending[0]["consumer"].decode()
        victim = next(i for i, p in enumerate(workers) if holder.endswith(f"-{p.pid}"))
        workers[victim].send_signal(signal.SIGKILL)
        workers[victim].wait()
        survivor = 1 - victim

        async def done() -> bool:
            assert workers[survivor].poll() is None, tail(logs[survivor])
            async with app.db.engine.connect() as conn:
                rows = (await conn.execute(sa.select(transcripts))).all()
            return len(rows) == 1 and rows[0].status == "done"

        await wait_for(done, 25, "the surviving worker to finish the job", every=0.2)
        async with app.db.engine.connect() as conn:
            (row,) = (await conn.execute(sa.select(transcripts))).all()
        assert row.text, "no transcript text"
        assert row.attempts == 2  # the dead worker's lease, then the survivor's: one write of the result
        assert "bus_claimed" in tail(logs[survivor], 100_000)
        survivor_done = [json.loads(line) for line in tail(logs[survivor], 100_000).splitlines()
                         if '"transcription_done"' in line]
        assert len(survivor_done) == 1
        assert r.xpending(S.JOBS_TRANSCRIBE, "transcribe")["pending"] == 0
        assert r.xlen(S.JOBS_TRANSCRIBE + ":dead") == 0

        await wait_settled(app.db.engine, ended_at_least=1, timeout=10)
        await assert_each_completed_call_once(app.db.engine)
    finally:
        r.close()
        for p in workers:
            end_process(p)
        if app is not None:
            await app.stop()
        await asyncio.sleep(0)
