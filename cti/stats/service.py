"""One entry point for every report, shared by the HTTP API and `cti stats`.

`run_report(kind, params, ...)` validates the parameters, applies who may see
what (admin: everything; supervisor: their teams' agents, site-wide queue
figures; agent: themselves only), runs the query and returns (meta, rows).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from cti.config import Settings
from cti.stats import customers, report
from cti.stats.live import live_from_store
from cti.stats.query import ParamError, StatsQuery, parse_instant, parse_query

REPORTS = ("agents", "queues", "hourly", "typology", "calls-list", "customers", "at-risk", "contacted", "live")
# reports about customers or the whole floor that plain agents do not get
SUPERVISOR_ONLY = frozenset({"queues", "customers", "at-risk", "contacted", "live"})


class NotVisible(LookupError):
    """What the viewer may not see: the API answers 404."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")
        self.what = what


@dataclass(frozen=True)
class Viewer:
    role: str                       # admin | supervisor | agent
    user: str = "cli"
    teams: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_principal(cls, p: Any) -> Viewer:
        return cls(role=str(p.role), user=p.user, teams=frozenset(p.teams))


ADMIN = Viewer("admin")


def apply_scope(kind: str, q: StatsQuery, viewer: Viewer, directory: Mapping[str, Mapping[str, Any]]) -> StatsQuery:
    """Narrow the query to what the viewer may see; raise NotVisible (404) for the rest."""
    if viewer.role == "admin":
        if q.team is not None:
            members = report.team_agents(dict(directory), q.team)
            q = q.with_agents(members if q.agents is None else q.agents & members)
        return q
    if viewer.role == "agent":
        if kind in SUPERVISOR_ONLY:
            raise NotVisible(f"report {kind}")
        if q.team is not None:
            raise NotVisible(f"team {q.team}")
        if q.agents is not None and q.agents != {viewer.user}:
            raise NotVisible(f"agent {','.join(sorted(q.agents - {viewer.user})) or viewer.user}")
        return q.with_agents(frozenset({viewer.user}))
    visible = frozenset(a for a, v in directory.items() if v.get("team") in viewer.teams or a == viewer.user)
    if q.team is not None:
        if q.team not in viewer.teams:
            raise NotVisible(f"team {q.team}")
        members = report.team_agents(dict(directory), q.team)
        q = q.with_agents(members if q.agents is None else q.agents & members)
    if q.agents is not None and not q.agents <= visible:
        raise NotVisible(f"agent {','.join(sorted(q.agents - visible))}")
    if kind in ("agents", "calls-list") and q.agents is None:
        q = q.with_agents(visible)
    return q


def _int(params: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        v = int(raw)
    except ValueError:
        raise ParamError(name, f"{raw!r} is not an integer") from None
    if not lo <= v <= hi:
        raise ParamError(name, f"must be between {lo} and {hi}")
    return v


def _choice(params: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    v = params.get(name) or default
    if v not in choices:
        raise ParamError(name, f"must be one of {', '.join(choices)}, not {v!r}")
    return v


def _bool(params: Mapping[str, str], name: str) -> bool:
    v = (params.get(name) or "").lower()
    if v in ("", "0", "false", "no"):
        return False
    if v in ("1", "true", "yes"):
        return True
    raise ParamError(name, f"must be true or false, not {v!r}")


async def run_report(kind: str, params: Mapping[str, str], engine: AsyncEngine, settings: Settings,
                     now: datetime, viewer: Viewer = ADMIN, router: Any = None) -> tuple[dict[str, Any], Any]:
    """Returns (meta, rows); for `live`, rows is the live snapshot dict."""
    if kind not in REPORTS:
        raise ParamError("report", f"must be one of {', '.join(REPORTS)}, not {kind!r}")
    q = parse_query(params, settings, now)
    fmt = params.get("format") or "json"
    if fmt not in ("json", "csv"):
        raise ParamError("format", f"must be json or csv, not {fmt!r}")
    directory = await report.agent_directory(engine, settings)
    q = apply_scope(kind, q, viewer, directory)
    meta: dict[str, Any] = {"report": kind, "query": q.describe()}
    if kind == "agents":
        with_median = _bool(params, "median") if params.get("median") else True
        return meta, await report.agents_report(engine, settings, q, now, directory, with_median)
    if kind == "queues":
        return meta, await report.queues_report(engine, settings, q)
    if kind == "hourly":
        return meta, await report.hourly_report(engine, settings, q)
    if kind == "typology":
        return meta, await report.typology_report(engine, settings, q)
    if kind == "calls-list":
        list_kind = _choice(params, "kind", ("all", "abandoned", "missed"), "all")
        return meta, await report.calls_list_report(engine, settings, q, list_kind, _bool(params, "pending"),
                                                    _int(params, "limit", 1000, 1, 10_000))
    if kind == "customers":
        group = _choice(params, "group", ("contact", "account"), "contact")
        long_wait = float(_int(params, "long_wait_s", int(customers.LONG_WAIT_S), 1, 86_400))
        return meta, await customers.customers_report(engine, q, group, params.get("contact") or None,
                                                      params.get("account") or None, long_wait,
                                                      _int(params, "limit", 500, 1, 10_000))
    if kind == "at-risk":
        long_wait = float(_int(params, "long_wait_s", int(customers.LONG_WAIT_S), 1, 86_400))
        return meta, await customers.at_risk_report(engine, q, long_wait, _int(params, "limit", 50, 1, 1000))
    if kind == "contacted":
        since, spoken = _contacted_since(params, q)
        meta["query"]["since"] = since.astimezone(q.tz).isoformat()
        meta["query"]["spoken"] = spoken
        return meta, await customers.contacted_report(engine, q.tenant, since, spoken)
    # live
    snap = None
    if router is not None and hasattr(router, "snapshot"):
        snap = router.snapshot()
    if not (isinstance(snap, Mapping) and "queues" in snap and "agents" in snap):
        snap = await live_from_store(engine, settings, now)
    return meta, scope_live(dict(snap), viewer, directory)


def scope_live(snap: dict[str, Any], viewer: Viewer, directory: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A supervisor sees their teams' agents and calls (plus calls no agent holds yet: queue-wide)."""
    if viewer.role == "admin":
        return snap

    def visible(agent: str | None) -> bool:
        return agent == viewer.user or (directory.get(agent or "", {}).get("team") in viewer.teams)

    snap["agents"] = [a for a in snap.get("agents", []) if visible(a.get("id"))]
    snap["calls"] = [c for c in snap.get("calls", []) if not c.get("agent") or visible(c.get("agent"))]
    return snap


def _contacted_since(params: Mapping[str, str], q: StatsQuery) -> tuple[datetime, bool]:
    if params.get("since") and params.get("not_since"):
        raise ParamError("not_since", "give either since or not_since, not both")
    if params.get("since"):
        return parse_instant(params["since"], q.tz, "since"), True
    if params.get("not_since"):
        return parse_instant(params["not_since"], q.tz, "not_since"), False
    raise ParamError("since", "is required (a date: which customers did we speak with since it), or not_since")


def csv_rows(kind: str, rows: Any) -> list[dict[str, Any]]:
    """Rows for the CSV export (live: one row per queue, then one per agent)."""
    if kind == "live":
        return [{"kind": "queue", **q} for q in rows["queues"]] + [
            {"kind": "agent", "id": a.get("id"), "name": a.get("name"), "team": a.get("team"),
             "state": a.get("state"), "since": a.get("since"), "time_in_state_s": a.get("time_in_state_s")}
            for a in rows["agents"]]
    return list(rows)
