"""The rollup reconciles exactly with the raw call records, and counts each call once."""

from __future__ import annotations

import asyncio
from collections import Counter

import sqlalchemy as sa

from cti.stats.aggregate import StatsRollup, thresholds
from cti.stats.metrics import ALL_AGENTS, ALL_QUEUES, call_deltas
from cti.store import tables as t
from tests.stats import history

FIELDS = ("offered", "answered", "missed", "abandoned", "short_abandoned", "answered_in_sl",
          "talk_s", "hold_s", "ring_s", "wait_s", "wait_answered_s")


async def _rollup_totals(engine, group=(), all_agents=False):
    """Sums over the per-agent rows (or, all_agents=True, over the ALL_AGENTS rows)."""
    h = t.stats_hourly.c
    cols = [h[g] for g in group]
    which = h.agent == ALL_AGENTS if all_agents else sa.and_(h.agent != ALL_AGENTS, h.queue != ALL_QUEUES)
    async with engine.connect() as conn:
        rows = (await conn.execute(
            sa.select(*cols, *[sa.func.sum(h[f]).label(f) for f in FIELDS], sa.func.max(h.max_wait_s).label("mx"))
            .where(which).group_by(*cols)
        )).mappings().all()
    return {tuple(r[g] for g in group): dict(r) for r in rows}


async def test_rollup_totals_equal_raw_call_records(engine, settings):
    """Sums over stats_hourly == the same figures computed straight from the calls table (SQL)."""
    rows = history.random_calls(400)
    await history.insert_calls(engine, rows)
    rollup = StatsRollup(engine, settings)
    assert await rollup.apply_batch(rows[:150]) == 150
    for r in rows[150:]:
        assert await rollup.on_call(r) is True
    c = t.calls.c
    inbound_q = sa.and_(c.direction != "outbound")
    sl_cases = sa.case(*[(c.queue == q.name, q.service_level_s) for q in settings.queues],
                       else_=settings.stats.service_level_s)
    short_cases = sa.case(*[(c.queue == q.name, q.short_abandon_s) for q in settings.queues],
                          else_=settings.stats.short_abandon_s)

    def count(cond):
        return sa.func.sum(sa.case((cond, 1), else_=0))

    async with engine.connect() as conn:
        raw = (await conn.execute(sa.select(
            sa.func.count().label("offered"),
            count(c.outcome == "answered").label("answered"),
            count(c.outcome == "abandoned").label("abandoned"),
            count(sa.and_(c.outcome == "abandoned", c.wait_s < short_cases)).label("short_abandoned"),
            count(sa.and_(c.outcome == "answered", inbound_q, c.wait_s <= sl_cases)).label("answered_in_sl"),
            sa.func.sum(c.talk_s).label("talk_s"), sa.func.sum(c.hold_s).label("hold_s"),
            sa.func.sum(c.ring_s).label("ring_s"), sa.func.sum(c.wait_s).label("wait_s"),
            sa.func.sum(sa.case((c.outcome == "answered", c.wait_s), else_=0)).label("wait_answered_s"),
            sa.func.max(c.wait_s).label("mx"),
        ).where(c.state == "ended"))).mappings().one()
        per_agent = dict((await conn.execute(
            sa.select(c.agent, sa.func.count()).where(c.outcome == "answered").group_by(c.agent))).all())
        rung = (await conn.execute(sa.select(c.direction, c.outcome, c.agent, c.agents_rung))).all()
    total = (await _rollup_totals(engine))[()]
    everyone = (await _rollup_totals(engine, all_agents=True))[()]
    for f in FIELDS:
        if f != "missed":
            assert total[f] == raw[f], f
            assert everyone[f] == raw[f], f
    assert total["mx"] == raw["mx"] == everyone["mx"]
    assert everyone["missed"] == total["missed"]
    # missed: every (call, rung agent) pair where that agent did not answer, inbound/internal only
    missed = Counter()
    for direction, outcome, agent, agents_rung in rung:
        if direction == "outbound":
            continue
        for a in set(agents_rung or []):
            if not (outcome == "answered" and a == agent):
                missed[a] += 1
    by_agent = await _rollup_totals(engine, ("agent",))
    # each agent's all-queues rows hold exactly its per-queue rows
    h = t.stats_hourly.c
    async with engine.connect() as conn:
        star = {r[0]: tuple(r[1:]) for r in (await conn.execute(
            sa.select(h.agent, *[sa.func.sum(h[f]) for f in FIELDS]).where(h.queue == ALL_QUEUES)
            .group_by(h.agent))).all()}
    assert star == {k[0]: tuple(v[f] for f in FIELDS) for k, v in by_agent.items() if k[0]}
    assert {k[0]: int(v["missed"]) for k, v in by_agent.items() if v["missed"]} == dict(missed)
    assert {k[0]: int(v["answered"]) for k, v in by_agent.items() if v["answered"]} == per_agent


async def test_same_call_applied_twice_counts_once(engine, settings):
    rows = history.hand_calls()
    rollup = StatsRollup(engine, settings)
    assert await rollup.on_call(rows[1]) is True
    assert await rollup.on_call(rows[1]) is False
    assert await rollup.apply_batch([rows[1], rows[0], rows[0]]) == 1
    # two nodes racing on the same calls
    results = await asyncio.gather(*[StatsRollup(engine, settings).on_call(rows[4]) for _ in range(4)])
    assert sorted(results) == [False, False, False, True]
    total = (await _rollup_totals(engine))[()]
    assert total["offered"] == 3 and total["answered"] == 3 and total["missed"] == 1
    assert total["talk_s"] == 100 + 200 + 60


async def test_calls_in_progress_are_not_applied(engine, settings):
    rows = [r for r in history.hand_calls() if r["state"] != "ended"]
    rollup = StatsRollup(engine, settings)
    assert await rollup.on_call(rows[0]) is False
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(t.stats_applied))).scalar() == 0


async def test_rebuild_reproduces_incremental_rollup(sqlite_engine, settings):
    rows = history.random_calls(120, seed=3)
    await history.insert_calls(sqlite_engine, rows)
    rollup = StatsRollup(sqlite_engine, settings)
    await rollup.apply_batch(rows)
    before = await _rollup_totals(sqlite_engine, ("hour", "queue", "agent", "direction"))
    assert await rollup.rebuild(batch=50) == 120
    assert await _rollup_totals(sqlite_engine, ("hour", "queue", "agent", "direction")) == before


def test_deltas_of_a_ring_all_call():
    row = history.call("x", history.MON, queue="support", agent="bob", wait=12, talk=30,
                       rung=("alice", "bob", "carol", "alice"))
    sl, short = thresholds(history.settings(), "support")
    deltas = call_deltas(row, sl, short)
    assert [(d.agent, d.offered, d.answered, d.missed) for d in deltas] == [
        ("bob", 1, 1, 0), ("alice", 0, 0, 1), ("carol", 0, 0, 1), ("*", 1, 1, 2),
        ("bob", 1, 1, 0), ("alice", 0, 0, 1), ("carol", 0, 0, 1)]
    assert [d.queue for d in deltas] == ["support"] * 4 + ["*"] * 3


async def test_folded_call_object_is_applied(sqlite_engine, settings):
    """The pipeline hands the rollup a `Call` (the fold of its events), not a table row."""
    from datetime import timedelta

    from cti.calls.state import fold
    from cti.model import CallEvent, Direction, EventKind

    t0 = history.MON + timedelta(hours=9)

    def ev(kind, s, agent=None, **data):
        return CallEvent(event_id=f"e-{kind}-{agent}-{s}", provider="sim", provider_call_id="p1", call_id="k1",
                         kind=kind, occurred_at=t0 + timedelta(seconds=s), agent=agent, queue="support",
                         direction=Direction.INBOUND, from_number="+33611111111", data=data)

    call = fold([ev(EventKind.CREATED, 0), ev(EventKind.QUEUED, 0), ev(EventKind.RINGING, 4, "bob"),
                 ev(EventKind.NO_ANSWER, 14, "bob"), ev(EventKind.RINGING, 15, "alice"),
                 ev(EventKind.ANSWERED, 18, "alice"), ev(EventKind.ENDED, 78, cause="normal")])
    assert call.is_ended and call.wait_s == 18
    assert await StatsRollup(sqlite_engine, settings).on_call(call) is True
    by_agent = await _rollup_totals(sqlite_engine, ("agent",))
    assert by_agent[("alice",)]["answered"] == 1 and by_agent[("alice",)]["answered_in_sl"] == 1
    assert by_agent[("alice",)]["talk_s"] == 60
    assert by_agent[("bob",)]["missed"] == 1
