"""`cti stats` prints the same figures as the API, as a table or CSV."""

from __future__ import annotations

import asyncio
import csv
import io

from cti.stats.cli import stats_main
from tests.stats import history
from tests.stats.conftest import make_engine


def _seeded(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    settings = history.settings().model_copy(update={"store": history.settings().store.model_copy(
        update={"url": url})})

    async def seed():
        from cti.stats.aggregate import StatsRollup

        engine = await make_engine(url)
        rows = history.hand_calls()
        await history.insert_calls(engine, rows)
        await history.load_crm(engine)
        await StatsRollup(engine, settings).apply_batch(rows)
        await engine.dispose()

    asyncio.run(seed())
    return settings


def test_cli_queues_csv_and_table(tmp_path, capsys):
    settings = _seeded(tmp_path)
    out = io.StringIO()
    assert stats_main(["queues", "--from", "2026-03-02", "--to", "2026-03-03", "--format", "csv"], settings,
                      out) == 0
    support = next(r for r in csv.DictReader(io.StringIO(out.getvalue())) if r["queue"] == "support")
    assert (support["offered"], support["service_level"]) == ("6", "0.4")
    out = io.StringIO()
    assert stats_main(["agents", "--from", "2026-03-02", "--to", "2026-03-03", "--team", "A"], settings, out) == 0
    text = out.getvalue()
    assert "alice" in text and "bob" in text and "carol" not in text
    out = io.StringIO()
    assert stats_main(["typology", "--from", "2026-03-02", "--to", "2026-03-03"], settings, out) == 0
    assert "Mon" in out.getvalue() and "3(2)" in out.getvalue()


def test_cli_bad_parameter_exits_2(tmp_path, capsys):
    settings = _seeded(tmp_path)
    assert stats_main(["hourly", "--from", "not-a-date"], settings, io.StringIO()) == 2
    assert "--from" in capsys.readouterr().err


def test_cli_rebuild(tmp_path):
    settings = _seeded(tmp_path)
    out = io.StringIO()
    assert stats_main(["rebuild"], settings, out) == 0
    assert "10 ended calls" in out.getvalue()
