"""`cti stats REPORT [--from D] [--to D] [--bucket hour|day|week] [filters] [--format table|csv]`.

Prints the same figures as `GET /api/v1/stats/REPORT`, as a rich table or CSV.
`cti stats rebuild` recomputes the rollups from the call records.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

from cti.config import Settings
from cti.stats.export import flatten, to_csv
from cti.stats.query import ParamError
from cti.stats.service import REPORTS, csv_rows, run_report

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

# the columns worth a terminal's width, per report (CSV always has every column)
TABLE_COLUMNS: dict[str, list[str]] = {
    "agents": ["agent", "name", "team", "handled_inbound", "handled_outbound", "missed", "talk_s", "talk_mean_s",
               "talk_median_s", "hold_s", "wrap_up_s", "aht_s", "occupancy", "logged_in_s"],
    "queues": ["queue", "offered", "answered", "abandoned", "short_abandoned", "kept_for_callback", "service_level",
               "abandon_rate", "asa_s", "longest_wait_s", "callbacks_requested", "callbacks_done"],
    "hourly": ["bucket", "calls", "answered", "not_answered", "inbound", "outbound", "abandoned", "missed",
               "service_level", "asa_s"],
    "calls-list": ["at", "kind", "queue", "from_number", "contact.name", "contact.account_name", "wait_s",
                   "short_abandon", "called_back"],
    "customers": ["id", "name", "account_name", "calls", "answered", "last_contact_at", "repeat_calls",
                  "unresolved", "escalated", "abandoned", "negative_sentiment", "long_waits", "risk_score"],
    "at-risk": ["rank", "account_id", "name", "risk_score", "calls", "last_call_at", "reasons"],
    "contacted": ["contact_id", "name", "account_name", "last_contact_at", "calls_since"],
    "live": ["kind", "name", "waiting", "oldest_wait_s", "in_progress", "id", "state", "time_in_state_s"],
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cti stats", description="Call statistics (formulas: docs/metrics.md)")
    p.add_argument("report", choices=[*REPORTS, "rebuild"])
    p.add_argument("--from", dest="from_", metavar="DATE", help="ISO date or datetime (site time zone)")
    p.add_argument("--to", metavar="DATE", help="ISO date (inclusive) or datetime (exclusive)")
    p.add_argument("--bucket", choices=["hour", "day", "week"])
    p.add_argument("--agent", help="agent id (comma-separated for several)")
    p.add_argument("--team")
    p.add_argument("--queue")
    p.add_argument("--direction", choices=["inbound", "outbound", "internal"])
    p.add_argument("--kind", choices=["all", "abandoned", "missed"], help="calls-list: which calls")
    p.add_argument("--pending", action="store_true", help="calls-list: only calls not called back yet")
    p.add_argument("--group", choices=["contact", "account"], help="customers: per contact or account")
    p.add_argument("--contact", help="customers: one contact, with its call history")
    p.add_argument("--account", help="customers: one account, with its call history")
    p.add_argument("--since", help="contacted: customers we spoke with since DATE")
    p.add_argument("--not-since", dest="not_since", help="contacted: customers we did not speak with since DATE")
    p.add_argument("--limit")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    return p


def _params(a: argparse.Namespace) -> dict[str, str]:
    raw = {"from": a.from_, "to": a.to, "bucket": a.bucket, "agent": a.agent, "team": a.team, "queue": a.queue,
           "direction": a.direction, "kind": a.kind, "pending": "true" if a.pending else None, "group": a.group,
           "contact": a.contact, "account": a.account, "since": a.since, "not_since": a.not_since,
           "limit": a.limit}
    return {k: v for k, v in raw.items() if v}


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".") if v != int(v) else str(int(v))
    return str(v)


def render_table(kind: str, meta: dict[str, Any], rows: Any, console: Any) -> None:
    from rich.table import Table

    q = meta["query"]
    title = f"{kind}  {q['from']} -> {q['to']} ({q['timezone']})"
    if kind == "typology":
        t = Table(title=title + "  calls (answered) by weekday x hour")
        t.add_column("day")
        for h in range(24):
            t.add_column(f"{h:02d}", justify="right")
        grid = {(r["weekday"], r["hour"]): r for r in rows}
        for d, name in enumerate(WEEKDAYS):
            t.add_row(name, *[
                f"{grid[(d, h)]['calls']}({grid[(d, h)]['answered']})" if grid[(d, h)]["calls"] else ""
                for h in range(24)])
        console.print(t)
        return
    flat = [flatten(r) for r in csv_rows(kind, rows)]
    cols = [c for c in TABLE_COLUMNS.get(kind, []) if any(c in r for r in flat)] or list(flat[0] if flat else [])
    t = Table(title=title)
    for c in cols:
        t.add_column(c, justify="left" if c in ("agent", "name", "queue", "bucket", "kind", "id") else "right")
    for r in flat:
        if kind == "queues" and r.get("queue") is None:
            r = {**r, "queue": "total"}
        t.add_row(*[_cell(r.get(c)) for c in cols])
    console.print(t)


async def _run(a: argparse.Namespace, settings: Settings, out: Any) -> int:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(settings.store.url)
    try:
        if a.report == "rebuild":
            from cti.stats.aggregate import StatsRollup

            n = await StatsRollup(engine, settings).rebuild()
            print(f"rebuilt rollups from {n} ended calls", file=out)
            return 0
        meta, rows = await run_report(a.report, _params(a), engine, settings, datetime.now(UTC))
    finally:
        await engine.dispose()
    if a.format == "csv":
        out.write(to_csv(csv_rows(a.report, rows)))
    elif a.format == "json":
        import json

        out.write(json.dumps({**meta, "rows": rows}, default=str, indent=2) + "\n")
    else:
        from rich.console import Console

        render_table(a.report, meta, rows, Console(file=out, width=200))
    return 0


def stats_main(argv: list[str], settings: Settings, out: Any = None) -> int:
    """Entry point of `cti stats`; returns the exit status (2 for a bad parameter)."""
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_run(args, settings, out))
    except ParamError as exc:
        print(f"cti stats: --{exc.field.replace('_', '-')}: {exc.message}", file=sys.stderr)
        return 2
