"""Buckets and typology follow the site's time zone, DST changes included."""

from __future__ import annotations

from datetime import UTC, datetime

from cti.config import Settings, SiteSettings
from cti.stats.aggregate import StatsRollup
from cti.stats.service import run_report
from tests.stats import history

NOW = datetime(2026, 4, 2, tzinfo=UTC)


async def _load(engine, settings, rows):
    await history.insert_calls(engine, rows)
    await StatsRollup(engine, settings).apply_batch(rows)


async def test_dst_day_has_23_hour_buckets(engine):
    """Europe/Paris springs forward on 2026-03-29: 01:30 CET and 03:30 CEST are one hour apart."""
    settings = history.settings()
    rows = [history.call("d1", datetime(2026, 3, 29, 0, 30, tzinfo=UTC), queue="support", wait=5, talk=10),
            history.call("d2", datetime(2026, 3, 29, 1, 30, tzinfo=UTC), queue="support", wait=5, talk=10),
            history.call("d3", datetime(2026, 3, 29, 22, 30, tzinfo=UTC), queue="support", wait=5, talk=10)]
    await _load(engine, settings, rows)
    _, hours = await run_report("hourly", {"from": "2026-03-29", "to": "2026-03-29", "bucket": "hour"}, engine,
                                settings, NOW)
    assert len(hours) == 23
    busy = [r["bucket"] for r in hours if r["calls"]]
    assert busy == ["2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00"]   # d3 is 00:30 on the 30th
    _, days = await run_report("hourly", {"from": "2026-03-28", "to": "2026-03-31", "bucket": "day"}, engine,
                               settings, NOW)
    assert [(r["bucket"][:10], r["calls"]) for r in days] == [
        ("2026-03-28", 0), ("2026-03-29", 2), ("2026-03-30", 1), ("2026-03-31", 0)]
    _, weeks = await run_report("hourly", {"from": "2026-03-23", "to": "2026-04-05", "bucket": "week"}, engine,
                                settings, NOW)
    assert [(r["bucket"][:10], r["calls"]) for r in weeks] == [("2026-03-23", 2), ("2026-03-30", 1)]
    _, cells = await run_report("typology", {"from": "2026-03-29", "to": "2026-03-30"}, engine, settings, NOW)
    got = {(c["weekday"], c["hour"]): c["calls"] for c in cells if c["calls"]}
    assert got == {(6, 1): 1, (6, 3): 1, (0, 0): 1}


async def test_half_hour_zone_typology_reads_raw_calls(sqlite_engine):
    settings = Settings(site=SiteSettings(timezone="Asia/Kolkata"), queues=history.settings().queues)
    rows = [history.call("k1", datetime(2026, 3, 2, 4, 15, tzinfo=UTC), queue="support", wait=5, talk=10),
            history.call("k2", datetime(2026, 3, 2, 4, 45, tzinfo=UTC), queue="support", outcome="abandoned",
                         wait=30)]
    await _load(sqlite_engine, settings, rows)
    _, cells = await run_report("typology", {"from": "2026-03-02", "to": "2026-03-02"}, sqlite_engine, settings,
                                NOW)
    got = {(c["weekday"], c["hour"]): (c["calls"], c["answered"]) for c in cells if c["calls"]}
    assert got == {(0, 9): (1, 1), (0, 10): (1, 0)}      # 09:45 and 10:15 IST
