"""Property: however events are ordered, duplicated and batched, each call row is the fold of its events."""

from __future__ import annotations

import asyncio
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cti.bus import Message, open_bus, streams
from cti.calls.pipeline import EventPipeline
from cti.calls.repo import call_from_row
from cti.calls.state import CallFolder, fold
from cti.store.db import Database
from cti.store.tables import metadata
from tests.integration.callgen import many_calls


async def _run(seed: int, n_calls: int, dup_rate: float, max_batch: int, keep_ended: int) -> None:
    rng = random.Random(seed)
    calls = many_calls(n_calls, seed=seed)
    events = [e for c in calls for e in c]
    events += [e for e in events if rng.random() < dup_rate]
    rng.shuffle(events)
    db = Database("sqlite+aiosqlite://")
    await db.connect()
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    # a tiny folder forces evictions and reloads from the store
    pipe = EventPipeline(open_bus("memory://"), db, consumer="p", folder=CallFolder(keep_ended=keep_ended))
    i = 0
    while i < len(events):
        size = rng.randint(1, max_batch)
        await pipe.handle([Message(f"{j}-0", streams.EVENTS, e.to_dict()) for j, e in enumerate(events[i : i + size])])
        i += size
    for c in calls:
        row = await pipe.repo.get_call(c[0].call_id)
        assert row is not None and call_from_row(row) == fold(c)
    await db.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n_calls=st.integers(1, 12),
    dup_rate=st.sampled_from([0.0, 0.2, 1.0]),
    max_batch=st.integers(1, 40),
    keep_ended=st.sampled_from([0, 1, 1000]),
)
def test_any_order_duplication_and_batching_gives_the_fold(seed, n_calls, dup_rate, max_batch, keep_ended) -> None:
    asyncio.run(_run(seed, n_calls, dup_rate, max_batch, keep_ended))
