"""Redis SIGKILLed between read and ack, restarted a couple of seconds later.

The Redis here persists with an fsync-always append-only file, as a production Redis
holding the bus should, so the restart brings back the streams and the pending
entries lists. Expected behaviour: the pipeline has stored a batch when Redis dies, so
its XACK fails; every consumer logs the loss, backs off and reconnects; the pipeline
re-reads its own pending entries (the batch it could not acknowledge) and stores them
again harmlessly (idempotent); provider events raised while Redis is down wait in the
app and are published once it is back (none lost). Nothing is dead-lettered, and every
completed call has exactly one record and one activity.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cti.bus import streams as S
from cti.calls.pipeline import EventPipeline
from tests.faults.checks import assert_each_completed_call_once, wait_settled
from tests.faults.conftest import (
    PersistentRedis,
    fault_settings,
    inject_calls,
    start_app,
    wait_for,
    wait_store_caught_up,
)

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

CALLS = 24
DOWN_S = 2.5  # longer than the bus's own short retries: the outage must be ridden out


async def test_redis_killed_between_read_and_ack_then_restarted(
    own_redis: PersistentRedis, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    killed = asyncio.Event()
    arm = asyncio.Event()
    handled_after: list[int] = []
    original = EventPipeline.handle

    async def handle(self: EventPipeline, batch: list) -> None:
        await original(self, batch)  # stored (committed) ...
        if killed.is_set():
            handled_after.append(len(batch))
        elif arm.is_set():
            killed.set()
            own_redis.kill()  # ... but Redis dies before the XACK

    monkeypatch.setattr(EventPipeline, "handle", handle)
    settings = fault_settings(tmp_path, bus_url=own_redis.url, store_url=pg_url,
                              bus={"socket_timeout_s": 2.0, "claim_idle_ms": 2000})
    app = await start_app(settings)
    try:
        inject_calls(app, CALLS // 2)
        await asyncio.sleep(0.5)
        arm.set()
        await wait_for(killed.is_set, 10, "a pipeline batch to be stored")
        inject_calls(app, CALLS // 2)  # their events are raised while Redis is down
        await asyncio.sleep(DOWN_S)
        own_redis.start()

        await wait_for(lambda: bool(handled_after), 15, "the pipeline to read again after the restart")
        await wait_settled(app.db.engine, ended_at_least=CALLS, timeout=30)
        settled = await assert_each_completed_call_once(app.db.engine)
        assert settled.calls == CALLS == settled.ended
        assert await app.bus.dead_letters(S.EVENTS) == []
        # nothing left pending or unread in the store group
        await wait_store_caught_up(app.bus)
    finally:
        await app.stop()
