"""PostgreSQL restarted while calls are being written.

Expected behaviour: the store goes away under load (connections reset, then refused),
stays down a couple of seconds and comes back. Writers treat that as an outage, not as
bad data: the pipeline retries its batch with backoff (`store_unavailable`), the other
consumers' failures are retried by the bus; nothing is dead-lettered for an outage.
Once PostgreSQL is back every call completes, and every completed call has exactly one
record (equal to the fold of its stored events) and one activity.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cti.bus import streams as S
from tests.faults.checks import assert_each_completed_call_once, counts, wait_settled
from tests.faults.conftest import fault_settings, inject_calls, start_app, wait_for
from tests.servers import PostgresServer

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

DOWN_S = 2.0


async def test_postgres_restarted_during_writes(
    redis_url: str, pg_url: str, pg_srv: PostgresServer, tmp_path: Path
) -> None:
    settings = fault_settings(tmp_path, bus_url=redis_url, store_url=pg_url)
    app = await start_app(settings)
    try:
        inject_calls(app, 12)

        async def some_written() -> bool:
            return (await counts(app.db.engine))[0] >= 3

        await wait_for(some_written, 10, "the first calls to be written")
        pg_srv.stop()  # fast shutdown: open connections are terminated mid-load
        inject_calls(app, 6)
        await asyncio.sleep(DOWN_S)
        pg_srv.start()

        await wait_settled(app.db.engine, ended_at_least=18, timeout=40)
        settled = await assert_each_completed_call_once(app.db.engine)
        assert settled.ended == 18
        for stream in (S.EVENTS, S.CALLS):
            assert await app.bus.dead_letters(stream) == [], stream
    finally:
        await app.stop()


async def test_postgres_down_while_activities_are_written(
    redis_url: str, pg_url: str, pg_srv: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store dies just as the activity stage takes an ended call: the activity is
    written once the store is back (an outage is not a poison entry), never dead-lettered."""
    from cti.app import CtiApp

    original = CtiApp._on_calls_activity
    state = {"stopped": False}

    async def on_calls_activity(self: CtiApp, batch: list) -> None:
        if not state["stopped"] and any((m.data.get("call") or {}).get("state") == "ended" for m in batch):
            state["stopped"] = True
            pg_srv.stop()
            asyncio.get_running_loop().call_later(DOWN_S, pg_srv.start)  # back in a moment
        await original(self, batch)

    monkeypatch.setattr(CtiApp, "_on_calls_activity", on_calls_activity)
    settings = fault_settings(tmp_path, bus_url=redis_url, store_url=pg_url)
    app = await start_app(settings)
    try:
        inject_calls(app, 6)
        await wait_for(lambda: state["stopped"], 15, "an ended call to reach the activity stage")
        await wait_settled(app.db.engine, ended_at_least=6, timeout=40)
        settled = await assert_each_completed_call_once(app.db.engine)
        assert settled.ended == 6
        assert await app.bus.dead_letters(S.CALLS) == []
    finally:
        await app.stop()
