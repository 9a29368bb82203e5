"""Duplicate and out-of-order provider events, through the whole app (Redis + PostgreSQL).

A provider that reconnects re-sends what it is not sure we got, and events of one call
can arrive in any order (several legs, several connections). Expected behaviour: the
events reach the bus duplicated and shuffled across calls and batches, yet each call
gets exactly one `calls` row equal to the fold of its distinct events, and each ended
call exactly one activity (the adapters' own cut/restart tests live in
test_adapter_reconnect_*.py; this is the app-level check behind them).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from cti.bus import streams as S
from cti.calls.repo import CallRepo, call_from_row
from cti.calls.state import fold
from cti.model import CallState
from tests.faults.checks import assert_each_completed_call_once, wait_settled
from tests.faults.conftest import fault_settings, start_app
from tests.integration.callgen import many_calls

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

CALLS = 60


async def test_duplicated_and_shuffled_events_give_one_record_and_one_activity_per_call(
    redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    settings = fault_settings(tmp_path, bus_url=redis_url, store_url=pg_url)
    app = await start_app(settings, login=False)
    try:
        expected = many_calls(CALLS, seed=9)
        rng = random.Random(3)
        sent = [e for evs in expected for e in evs]
        sent += rng.sample(sent, len(sent) // 2)          # half of them again
        rng.shuffle(sent)                                 # any order, across calls
        for i in range(0, len(sent), 17):                 # in several batches
            await app.bus.publish_many(S.EVENTS, [e.to_dict() for e in sent[i:i + 17]])
        # the same facts again later, as a reconnecting provider would re-send them
        await app.bus.publish_many(S.EVENTS, [e.to_dict() for e in rng.sample(sent, 40)])

        n_ended = sum(fold(evs).state is CallState.ENDED for evs in expected)
        await wait_settled(app.db.engine, ended_at_least=n_ended, timeout=25, all_ended=False)
        settled = await assert_each_completed_call_once(app.db.engine)
        assert settled.calls == CALLS and settled.ended == n_ended == settled.activities

        rows = {r["call_id"]: r for r in await CallRepo(app.db).list_calls({}, limit=CALLS + 10)}
        for evs in expected:
            assert call_from_row(rows[evs[0].call_id]) == fold(evs)
        assert await app.bus.dead_letters(S.EVENTS) == []
    finally:
        await app.stop()
