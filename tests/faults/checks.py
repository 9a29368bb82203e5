"""The invariant every fault test ends with: each completed call once, and right.

`assert_each_completed_call_once(engine)` checks, against the fold of the stored
`call_events` (the source of truth the pipeline folds from):

- every call id that has events has exactly one `calls` row, and its fold-derived
  columns equal `fold(stored events)` (no lost update, no stale writer);
- no `calls` row exists without events;
- every ended call (by the fold) has exactly one `activities` row, and no activity
  exists for a call that is not ended.

It returns counts so a test can also assert that its load actually happened.
`wait_settled(engine, ...)` polls until every ended call has its activity (the activity
writer runs after the pipeline, so a test must let it catch up before checking).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from cti.calls.repo import call_from_row
from cti.calls.state import fold
from cti.model import CallEvent, CallState
from cti.store.tables import activities, call_events, calls


@dataclass(frozen=True)
class Settled:
    calls: int        # call ids with stored events
    ended: int        # of which ended (by the fold)
    activities: int


async def _load(engine: Any) -> tuple[dict[str, list[CallEvent]], dict[str, Any], Counter[str]]:
    events: dict[str, list[CallEvent]] = {}
    async with engine.connect() as conn:
        for cid, payload in (await conn.execute(sa.select(call_events.c.call_id, call_events.c.payload))).all():
            events.setdefault(cid, []).append(CallEvent.from_dict(payload))
        rows = {r._mapping["call_id"]: r._mapping for r in (await conn.execute(sa.select(calls))).all()}
        acts = Counter(r[0] for r in (await conn.execute(sa.select(activities.c.call_id))).all())
    return events, rows, acts


async def assert_each_completed_call_once(engine: Any) -> Settled:
    """Assert the invariant (see module docstring); returns the counts."""
    events, rows, acts = await _load(engine)
    problems: list[str] = []
    ended = 0
    for cid, evs in events.items():
        expected = fold(evs)
        row = rows.get(cid)
        if row is None:
            problems.append(f"{cid}: {len(evs)} stored events but no calls row")
            continue
        got = call_from_row(row)
        if got != expected:
            diff = {k: (getattr(got, k), getattr(expected, k)) for k in expected.__dataclass_fields__
                    if getattr(got, k) != getattr(expected, k)}
            problems.append(f"{cid}: calls row differs from the fold of its events: {diff}")
        if expected.state is CallState.ENDED:
            ended += 1
            if acts.get(cid, 0) != 1:
                problems.append(f"{cid}: ended call has {acts.get(cid, 0)} activities (expected 1)")
        elif acts.get(cid):
            problems.append(f"{cid}: call not ended ({expected.state}) but has an activity")
    for cid in rows.keys() - events.keys():
        problems.append(f"{cid}: calls row without any stored event")
    for cid in acts.keys() - events.keys():
        problems.append(f"{cid}: activity for an unknown call")
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:20])
    return Settled(len(events), ended, sum(acts.values()))


async def counts(engine: Any) -> tuple[int, int, int]:
    """(calls rows, ended calls rows, activities rows)."""
    async with engine.connect() as conn:
        total = (await conn.execute(sa.select(sa.func.count()).select_from(calls))).scalar_one()
        ended = (await conn.execute(sa.select(sa.func.count()).select_from(calls)
                                    .where(calls.c.state == "ended"))).scalar_one()
        acts = (await conn.execute(sa.select(sa.func.count()).select_from(activities))).scalar_one()
    return int(total), int(ended), int(acts)


async def wait_settled(engine: Any, *, ended_at_least: int = 1, timeout: float = 20.0,
                       all_ended: bool = True) -> tuple[int, int, int]:
    """Wait until at least `ended_at_least` calls ended, (if `all_ended`) none is still
    in progress, and every ended call has its activity. Returns `counts()`."""
    deadline = time.monotonic() + timeout
    last: tuple[int, int, int] = (0, 0, 0)
    while time.monotonic() < deadline:
        try:
            last = await counts(engine)
        except Exception:  # the store may be restarting in a fault test
            await asyncio.sleep(0.2)
            continue
        total, ended, acts = last
        if ended >= ended_at_least and acts == ended and (not all_ended or total == ended):
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"not settled after {timeout}s: (calls, ended, activities) = {last}\n"
                         + await _unsettled_report(engine))


async def _unsettled_report(engine: Any) -> str:
    """Which calls are not done, with the kinds of their stored events: enough to tell a
    routing loss (queued, never offered) from a lost event (answered, no ended)."""
    try:
        events, rows, acts = await _load(engine)
    except Exception as exc:  # the store may be down: say so rather than hide the timeout
        return f"(no report: {exc!r})"
    lines = []
    for cid, evs in events.items():
        call = fold(evs)
        if call.state is not CallState.ENDED or acts.get(cid, 0) != 1:
            kinds = [f"{e.kind.value}{'@' + e.agent if e.agent else ''}"
                     for e in sorted(evs, key=lambda e: (e.occurred_at, e.seq))]
            lines.append(f"{cid} state={call.state.value} activities={acts.get(cid, 0)} events={kinds}")
    return "\n".join(lines[:20]) or "(every call with events is settled: a calls row is missing its events)"
