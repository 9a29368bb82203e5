"""Reports count exactly the calls that started in [from, to), whatever the bounds and the zone.

The rollups hold whole UTC hours; a bound inside an hour (a datetime, or a local midnight in
a zone whose offset is not whole hours) must neither drop nor add the calls of that hour.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from cti.config import Settings, SiteSettings
from cti.stats.aggregate import StatsRollup, thresholds
from cti.stats.metrics import ALL_AGENTS, add_sums, call_deltas, call_start, derive_queue, empty_sums
from cti.stats.service import run_report
from tests.stats import history

NOW = datetime(2026, 11, 1, tzinfo=UTC)
MON = history.MON


async def _load(engine, settings, rows):
    await history.insert_calls(engine, rows)
    await StatsRollup(engine, settings).apply_batch(rows)


def _queue_total(rows: list[dict], settings: Settings, start: datetime, end: datetime) -> dict:
    """The queues report's total row, computed straight from the call rows (exact bounds)."""
    acc = empty_sums()
    for r in rows:
        if r["state"] != "ended" or not start <= call_start(r) < end:
            continue
        if r["direction"] == "outbound" or not r["queue"]:
            continue
        for d in call_deltas(r, *thresholds(settings, r["queue"])):
            if d.agent == ALL_AGENTS:
                add_sums(acc, d.values())
    return derive_queue(acc)


async def test_datetime_bounds_inside_an_hour_count_exactly_the_calls_between(engine):
    settings = history.settings()
    rows = [history.call("b1", MON + timedelta(hours=9, minutes=10), queue="support", outcome="abandoned", wait=30),
            history.call("b2", MON + timedelta(hours=9, minutes=50), queue="support", agent="alice", wait=5,
                         talk=60, rung=("alice",)),
            history.call("b3", MON + timedelta(hours=10, minutes=20), queue="support", outcome="abandoned",
                         wait=40),
            history.call("b4", MON + timedelta(hours=10, minutes=40), queue="support", outcome="abandoned",
                         wait=50)]
    await _load(engine, settings, rows)
    span = {"from": "2026-03-02T09:30:00Z", "to": "2026-03-02T10:30:00Z"}
    _, queues = await run_report("queues", span, engine, settings, NOW)
    support = next(r for r in queues if r["queue"] == "support")
    assert (support["offered"], support["answered"], support["abandoned"]) == (2, 1, 1)   # b2, b3
    _, agents = await run_report("agents", span, engine, settings, NOW)
    assert next(a for a in agents if a["agent"] == "alice")["handled_inbound"] == 1
    _, series = await run_report("hourly", {**span, "bucket": "hour"}, engine, settings, NOW)
    assert [(r["bucket"], r["calls"]) for r in series] == [("2026-03-02T10:00:00+01:00", 1),
                                                         ("2026-03-02T11:00:00+01:00", 1)]
    _, cells = await run_report("typology", span, engine, settings, NOW)
    assert {(c["weekday"], c["hour"]): c["calls"] for c in cells if c["calls"]} == {(0, 10): 1, (0, 11): 1}


async def test_half_hour_zone_hours_and_days_follow_local_time(sqlite_engine):
    """Asia/Kolkata is UTC+05:30: each local hour straddles two rollup hours."""
    settings = Settings(site=SiteSettings(timezone="Asia/Kolkata"), queues=history.settings().queues)
    rows = [history.call("k1", datetime(2026, 3, 2, 4, 15, tzinfo=UTC), queue="support", wait=5, talk=10),
            history.call("k2", datetime(2026, 3, 2, 4, 45, tzinfo=UTC), queue="support", outcome="abandoned",
                         wait=30),
            history.call("k3", datetime(2026, 3, 2, 18, 15, tzinfo=UTC), queue="support", wait=5, talk=10),
            history.call("k4", datetime(2026, 3, 2, 18, 45, tzinfo=UTC), queue="support", wait=5, talk=10)]
    await _load(sqlite_engine, settings, rows)
    _, hours = await run_report("hourly", {"from": "2026-03-02", "to": "2026-03-02", "bucket": "hour"},
                                sqlite_engine, settings, NOW)
    assert len(hours) == 24
    busy = [(r["bucket"], r["calls"], r["answered"]) for r in hours if r["calls"]]
    assert busy == [("2026-03-02T09:00:00+05:30", 1, 1), ("2026-03-02T10:00:00+05:30", 1, 0),
                    ("2026-03-02T23:00:00+05:30", 1, 1)]     # k4 is 00:15 on the 3rd
    _, days = await run_report("hourly", {"from": "2026-03-02", "to": "2026-03-03"}, sqlite_engine, settings, NOW)
    assert [(r["bucket"][:10], r["calls"]) for r in days] == [("2026-03-02", 3), ("2026-03-03", 1)]
    _, queues = await run_report("queues", {"from": "2026-03-03", "to": "2026-03-03"}, sqlite_engine, settings,
                                 NOW)
    assert queues[-1]["offered"] == 1                       # k4 only


async def test_dst_fall_back_day_has_25_hour_buckets_and_two_2am_hours(engine):
    """Europe/Paris falls back on 2026-10-25: 02:00-03:00 happens twice (CEST, then CET)."""
    settings = history.settings()
    rows = [history.call("f1", datetime(2026, 10, 25, 0, 30, tzinfo=UTC), queue="support", wait=5, talk=10),
            history.call("f2", datetime(2026, 10, 25, 1, 30, tzinfo=UTC), queue="support", wait=5, talk=10),
            history.call("f3", datetime(2026, 10, 25, 1, 40, tzinfo=UTC), queue="support", wait=5, talk=10),
            history.call("f4", datetime(2026, 10, 25, 22, 59, tzinfo=UTC), queue="support", wait=5, talk=10)]
    await _load(engine, settings, rows)
    _, hours = await run_report("hourly", {"from": "2026-10-25", "to": "2026-10-25", "bucket": "hour"}, engine,
                                settings, NOW)
    assert len(hours) == 25
    busy = [(r["bucket"], r["calls"]) for r in hours if r["calls"]]
    assert busy == [("2026-10-25T02:00:00+02:00", 1), ("2026-10-25T02:00:00+01:00", 2),
                    ("2026-10-25T23:00:00+01:00", 1)]
    _, days = await run_report("hourly", {"from": "2026-10-25", "to": "2026-10-26"}, engine, settings, NOW)
    assert [(r["bucket"], r["calls"]) for r in days] == [("2026-10-25T00:00:00+02:00", 4),
                                                       ("2026-10-26T00:00:00+01:00", 0)]
    _, cells = await run_report("typology", {"from": "2026-10-25", "to": "2026-10-25"}, engine, settings, NOW)
    assert {(c["weekday"], c["hour"]): c["calls"] for c in cells if c["calls"]} == {(6, 2): 3, (6, 23): 1}


async def test_queue_totals_equal_raw_calls_for_random_bounds(sqlite_engine):
    """Property: for random [from, to) (datetimes, any minute), rollup-backed totals == raw calls."""
    rnd = random.Random(11)
    for zone in ("Europe/Paris", "Asia/Kolkata"):
        settings = history.settings()
        settings = Settings(site=SiteSettings(timezone=zone), queues=settings.queues, agents=settings.agents)
        prefix = zone[:2]
        rows = history.random_calls(300, seed=len(zone), days=3, prefix=prefix)
        await _load(sqlite_engine, settings, rows)
        for _ in range(12):
            start = MON + timedelta(minutes=rnd.randrange(3 * 24 * 60))
            end = start + timedelta(minutes=rnd.randrange(1, 36 * 60))
            params = {"from": start.isoformat(), "to": end.isoformat()}
            _, queues = await run_report("queues", params, sqlite_engine, settings, NOW)
            got = {k: queues[-1][k] for k in ("offered", "answered", "abandoned", "short_abandoned",
                                              "answered_in_sl", "asa_s", "longest_wait_s")}
            own = [r for r in rows if r["call_id"].startswith(prefix)]
            want = _queue_total(own, settings, start, end)
            assert got == {k: want[k] for k in got}, (zone, start, end)
            _, series = await run_report("hourly", {**params, "bucket": "hour"}, sqlite_engine, settings, NOW)
            assert sum(r["calls"] for r in series) == sum(
                1 for r in own if start <= call_start(r) < end), (zone, start, end)
        await _clear(sqlite_engine)


async def _clear(engine) -> None:
    import sqlalchemy as sa

    from cti.store import tables as t

    async with engine.begin() as conn:
        for table in (t.calls, t.stats_hourly, t.stats_applied):
            await conn.execute(sa.delete(table))


async def test_caller_who_asked_for_a_callback_is_not_an_abandon(engine):
    """Amazon Connect: contacts queued for callback are not counted as abandoned."""
    import sqlalchemy as sa

    from cti.store import tables as t

    settings = history.settings()
    at = MON + timedelta(hours=9)
    rows = [history.call("w1", at, queue="support", outcome="abandoned", wait=90),
            history.call("w2", at + timedelta(minutes=1), queue="support", outcome="abandoned", wait=60),
            history.call("w3", at + timedelta(minutes=2), queue="support", agent="bob", wait=10, talk=30,
                         rung=("bob",))]
    await _load(engine, settings, rows)
    async with engine.begin() as conn:
        await conn.execute(sa.insert(t.callbacks), [{
            "id": "cbw1", "tenant": "default", "queue": "support", "number": "+33100000000", "call_id": "w1",
            "requested_at": at + timedelta(seconds=80), "position_at": at, "state": "waiting"}])
    day = {"from": "2026-03-02", "to": "2026-03-02"}
    _, queues = await run_report("queues", day, engine, settings, NOW)
    s = next(r for r in queues if r["queue"] == "support")
    assert (s["offered"], s["abandoned"], s["kept_for_callback"], s["short_abandoned"]) == (3, 1, 1, 0)
    assert s["abandon_rate"] == round(1 / 3, 4)
    assert s["service_level"] == round(1 / 3, 4)      # w1 was not answered within 20 s: still counted
    assert (queues[-1]["abandoned"], queues[-1]["kept_for_callback"]) == (1, 1)
    _, series = await run_report("hourly", day, engine, settings, NOW)
    assert (series[0]["abandoned"], series[0]["kept_for_callback"]) == (1, 1)
