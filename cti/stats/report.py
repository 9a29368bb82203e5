"""Historical report queries (agents, queues, hourly series, typology, calls to call back).

Aggregates read the stats_hourly rollup (one row per hour x queue x agent x
direction), so their cost grows with hours x agents, not with calls. What a
rollup cannot hold is read from the raw tables with indexed range scans: the
median talk time (calls), time per agent state (agent_state_log), callbacks.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.config import Settings
from cti.stats.aggregate import thresholds
from cti.stats.metrics import (
    ALL_AGENTS,
    ALL_QUEUES,
    COUNT_FIELDS,
    MAX_FIELDS,
    SUM_FIELDS,
    add_sums,
    bucket_start,
    derive_agent,
    derive_queue,
    empty_sums,
    median,
    state_durations,
    weekday_hour,
)
from cti.stats.query import StatsQuery
from cti.store.tables import accounts, agent_state_log, callbacks, contacts, stats_hourly
from cti.store.tables import agents as agents_t
from cti.store.tables import calls as calls_t

H = stats_hourly.c


def _sum_columns() -> list[Any]:
    cols: list[Any] = [sa.func.coalesce(sa.func.sum(H[f]), 0).label(f) for f in COUNT_FIELDS + SUM_FIELDS]
    cols += [sa.func.coalesce(sa.func.max(H[f]), 0).label(f) for f in MAX_FIELDS]
    return cols


def _rollup_where(q: StatsQuery, agents: Iterable[str] | None = None, per_agent: bool = False) -> list[Any]:
    """Which rollup rows answer the query (docs/metrics.md, "Rollup").

    per_agent (the agents report): each agent's ALL_QUEUES rows, or its rows of q.queue.
    Otherwise: the ALL_AGENTS rows, or - agents filtered - those agents' per-queue rows.
    """
    cond: list[Any] = [H.tenant == q.tenant, H.hour >= q.start, H.hour < q.end]
    scope = q.agents if agents is None else frozenset(agents)
    if scope is not None:
        cond.append(H.agent.in_(sorted(scope - {ALL_AGENTS, ""})))
    elif per_agent:
        cond.append(H.agent.not_in(["", ALL_AGENTS]))
    else:
        cond.append(H.agent == ALL_AGENTS)
    if per_agent:
        cond.append(H.queue == (q.queue if q.queue is not None else ALL_QUEUES))
    else:
        cond.append(H.queue != ALL_QUEUES)
        if q.queue is not None:
            cond.append(H.queue == q.queue)
    if q.direction is not None:
        cond.append(H.direction == q.direction)
    return cond


async def agent_directory(engine: AsyncEngine, settings: Settings) -> dict[str, dict[str, Any]]:
    """Agent id -> {"id", "name", "team"}: the configured agents, overlaid by the agents table."""
    out: dict[str, dict[str, Any]] = {
        a.id: {"id": a.id, "name": a.name, "team": a.team} for a in settings.agents
    }
    async with engine.connect() as conn:
        rows = (await conn.execute(
            sa.select(agents_t.c.id, agents_t.c.name, agents_t.c.team)
            .where(agents_t.c.tenant == settings.site.tenant)
        )).all()
    for r in rows:
        out[r.id] = {"id": r.id, "name": r.name, "team": r.team}
    return out


def team_agents(directory: dict[str, dict[str, Any]], team: str) -> frozenset[str]:
    return frozenset(a for a, v in directory.items() if v.get("team") == team)


# --------------------------------------------------------------------------- agents

async def agents_report(engine: AsyncEngine, settings: Settings, q: StatsQuery, now: datetime,
                        directory: dict[str, dict[str, Any]] | None = None,
                        with_median: bool = True) -> list[dict[str, Any]]:
    """One row per agent in scope (q.agents, or q.team's agents, or everyone).

    The median talk time is read from the call records (a rollup cannot hold it);
    with_median=False skips that scan (talk_median_s is then null).
    """
    directory = directory if directory is not None else await agent_directory(engine, settings)
    scope = q.agents
    if q.team is not None:
        members = team_agents(directory, q.team)
        scope = members if scope is None else scope & members
    async with engine.connect() as conn:
        rows = (await conn.execute(
            sa.select(H.agent, H.direction, *_sum_columns())
            .where(*_rollup_where(q, scope, per_agent=True))
            .group_by(H.agent, H.direction)
        )).mappings().all()
        medians = await _talk_medians(conn, q, scope) if with_median else {}
        log_cond = [agent_state_log.c.tenant == q.tenant, agent_state_log.c.started_at < q.end,
                    sa.or_(agent_state_log.c.ended_at.is_(None), agent_state_log.c.ended_at > q.start)]
        if scope is not None:
            log_cond.append(agent_state_log.c.agent.in_(sorted(scope)))
        intervals = (await conn.execute(
            sa.select(agent_state_log.c.agent, agent_state_log.c.state,
                      agent_state_log.c.started_at, agent_state_log.c.ended_at).where(*log_cond)
        )).mappings().all()
    inbound: dict[str, dict[str, float]] = {}
    outbound: dict[str, dict[str, float]] = {}
    for r in rows:
        target = outbound if r["direction"] == "outbound" else inbound
        add_sums(target.setdefault(r["agent"], empty_sums()), r)
    by_agent_iv: dict[str, list[dict[str, Any]]] = {}
    for iv in intervals:
        by_agent_iv.setdefault(iv["agent"], []).append(_aware(dict(iv)))
    ids = set(inbound) | set(outbound) | set(by_agent_iv)
    ids |= set(directory) if scope is None else set(scope)
    if scope is not None:
        ids &= set(scope)
    out = []
    for a in sorted(ids):
        states = state_durations(by_agent_iv.get(a, []), q.start, q.end, now)
        info = directory.get(a, {})
        out.append({"agent": a, "name": info.get("name") or a, "team": info.get("team"),
                    **derive_agent(inbound.get(a, {}), outbound.get(a, {}), states, medians.get(a))})
    return out


def _aware(d: dict[str, Any]) -> dict[str, Any]:
    """SQLite returns naive datetimes for timezone-aware columns; they are UTC."""
    for k, v in d.items():
        if isinstance(v, datetime) and v.tzinfo is None:
            d[k] = v.replace(tzinfo=UTC)
    return d


async def _talk_medians(conn: Any, q: StatsQuery, scope: frozenset[str] | None) -> dict[str, float | None]:
    c = calls_t.c
    cond = [c.tenant == q.tenant, c.created_at >= q.start, c.created_at < q.end,
            c.outcome == "answered", c.agent.is_not(None)]
    if scope is not None:
        cond.append(c.agent.in_(sorted(scope)))
    if q.queue is not None:
        cond.append(c.queue == q.queue)
    if q.direction is not None:
        cond.append(c.direction == q.direction)
    if conn.dialect.name == "postgresql":
        med = sa.func.percentile_cont(0.5).within_group(c.talk_s)
        rows = (await conn.execute(sa.select(c.agent, med).where(*cond).group_by(c.agent))).all()
        return {r[0]: round(float(r[1]), 3) for r in rows}
    values: dict[str, list[float]] = {}
    for agent, talk in (await conn.execute(sa.select(c.agent, c.talk_s).where(*cond))).all():
        values.setdefault(agent, []).append(float(talk))
    return {a: median(v) for a, v in values.items()}


# --------------------------------------------------------------------------- queues

async def queues_report(engine: AsyncEngine, settings: Settings, q: StatsQuery) -> list[dict[str, Any]]:
    """One row per queue (configured or seen) plus a final `"queue": null` total row.

    Queue metrics count inbound/internal calls that entered a queue.
    """
    async with engine.connect() as conn:
        rows = (await conn.execute(
            sa.select(H.queue, *_sum_columns())
            .where(*_rollup_where(q), H.queue != "", H.direction != "outbound")
            .group_by(H.queue)
        )).mappings().all()
        cb = callbacks.c
        cb_cond = [cb.tenant == q.tenant, cb.requested_at >= q.start, cb.requested_at < q.end]
        if q.queue is not None:
            cb_cond.append(cb.queue == q.queue)
        cb_rows = (await conn.execute(
            sa.select(cb.queue, sa.func.count().label("requested"),
                      sa.func.sum(sa.case((cb.state == "done", 1), else_=0)).label("done"))
            .where(*cb_cond).group_by(cb.queue)
        )).mappings().all()
    sums = {r["queue"]: add_sums(empty_sums(), r) for r in rows}
    cbs = {r["queue"]: (int(r["requested"] or 0), int(r["done"] or 0)) for r in cb_rows}
    names = set(sums) | set(cbs) | {qs.name for qs in settings.queues}
    if q.queue is not None:
        names = {q.queue}
    out = []
    total = empty_sums()
    for name in sorted(names):
        s = sums.get(name, empty_sums())
        add_sums(total, s)
        req, done = cbs.get(name, (0, 0))
        sl_s, short_s = thresholds(settings, name)
        out.append({"queue": name, **derive_queue(s), "service_level_s": sl_s, "short_abandon_s": short_s,
                    "callbacks_requested": req, "callbacks_done": done})
    req_t = sum(cbs.get(n, (0, 0))[0] for n in names)
    done_t = sum(cbs.get(n, (0, 0))[1] for n in names)
    out.append({"queue": None, **derive_queue(total), "service_level_s": None, "short_abandon_s": None,
                "callbacks_requested": req_t, "callbacks_done": done_t})
    return out


# --------------------------------------------------------------------------- series

def _bucket_row(bucket: datetime, s_q: dict[str, float], s_all: dict[str, float],
                s_out: dict[str, float]) -> dict[str, Any]:
    """s_q: inbound calls that entered a queue (service level, abandons, ASA); s_all: every call."""
    dq = derive_queue(s_q)
    return {
        "bucket": bucket.isoformat(),
        "calls": int(s_all["offered"]),
        "answered": int(s_all["answered"]),
        "not_answered": int(s_all["offered"] - s_all["answered"]),
        "inbound": int(s_all["offered"] - s_out["offered"]),
        "outbound": int(s_out["offered"]),
        "queued": dq["offered"],
        "abandoned": dq["abandoned"],
        "short_abandoned": dq["short_abandoned"],
        "missed": int(s_all["missed"]),
        "service_level": dq["service_level"],
        "asa_s": dq["asa_s"],
        "longest_wait_s": dq["longest_wait_s"],
        "talk_s": round(float(s_all["talk_s"]), 3),
    }


def _buckets(q: StatsQuery) -> list[datetime]:
    out = []
    cur = bucket_start(q.start, q.bucket, q.tz)
    step = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7)}[q.bucket]
    while cur < q.end:
        out.append(cur)
        if q.bucket == "hour":  # real hours (UTC arithmetic): DST days have 23 or 25 of them
            cur = (cur.astimezone(UTC) + step).astimezone(q.tz)
        else:  # local midnights (wall-clock arithmetic)
            cur = bucket_start((cur.replace(tzinfo=None) + step).replace(tzinfo=q.tz), q.bucket, q.tz)
    return out


async def hourly_report(engine: AsyncEngine, settings: Settings, q: StatsQuery) -> list[dict[str, Any]]:
    """Time series over q.bucket (hour/day/week in the site's time zone), empty buckets included."""
    queued = sa.case((H.queue != "", 1), else_=0).label("queued")
    # PostgreSQL buckets in SQL (fewer rows back); SQLite returns hours and Python buckets them
    in_sql = engine.dialect.name == "postgresql" and q.bucket != "hour"
    bucket = (sa.func.date_trunc(q.bucket, sa.func.timezone(q.tz.key, H.hour)) if in_sql else H.hour).label("b")
    async with engine.connect() as conn:
        rows = (await conn.execute(
            sa.select(bucket, H.direction, queued, *_sum_columns())
            .where(*_rollup_where(q)).group_by(bucket, H.direction, queued)
        )).mappings().all()
    acc: dict[datetime, tuple[dict, dict, dict]] = {}
    for r in rows:
        if in_sql:  # a local wall-clock midnight
            b = r["b"].replace(tzinfo=q.tz).astimezone(UTC)
        else:
            b = bucket_start(_aware({"h": r["b"]})["h"], q.bucket, q.tz).astimezone(UTC)
        s_q, s_all, s_out = acc.setdefault(b, (empty_sums(), empty_sums(), empty_sums()))
        add_sums(s_all, r)
        if r["direction"] == "outbound":
            add_sums(s_out, r)
        elif r["queued"]:
            add_sums(s_q, r)
    out = []
    for b in _buckets(q):
        s_q, s_all, s_out = acc.pop(b.astimezone(UTC), (empty_sums(), empty_sums(), empty_sums()))
        out.append(_bucket_row(b, s_q, s_all, s_out))
    return out


def _whole_hour_offsets(q: StatsQuery) -> bool:
    """Rollup hours map exactly onto local hours only when the zone's offset is whole hours."""
    probes = [q.start, q.end, q.start + (q.end - q.start) / 2]
    return all((p.astimezone(q.tz).utcoffset() or timedelta()).total_seconds() % 3600 == 0 for p in probes)


async def typology_report(engine: AsyncEngine, settings: Settings, q: StatsQuery) -> list[dict[str, Any]]:
    """168 cells (weekday 0=Monday x hour 0-23, site time zone): answered/not answered, in/outbound."""
    cells = {(d, h): {"weekday": d, "hour": h, "calls": 0, "answered": 0, "not_answered": 0,
                      "inbound": 0, "outbound": 0} for d in range(7) for h in range(24)}
    async with engine.connect() as conn:
        if _whole_hour_offsets(q) and conn.dialect.name == "postgresql":
            local = sa.func.timezone(q.tz.key, H.hour)
            dow = (sa.extract("isodow", local) - 1).label("dow")
            hr = sa.extract("hour", local).label("hr")
            rows = (await conn.execute(
                sa.select(dow, hr, H.direction, sa.func.sum(H.offered).label("offered"),
                          sa.func.sum(H.answered).label("answered"))
                .where(*_rollup_where(q)).group_by(dow, hr, H.direction)
            )).mappings().all()
            for r in rows:
                _add_cell(cells[(int(r["dow"]), int(r["hr"]))], r["direction"], int(r["offered"] or 0),
                          int(r["answered"] or 0))
            return list(cells.values())
        if _whole_hour_offsets(q):
            rows = (await conn.execute(
                sa.select(H.hour, H.direction, sa.func.sum(H.offered).label("offered"),
                          sa.func.sum(H.answered).label("answered"))
                .where(*_rollup_where(q)).group_by(H.hour, H.direction)
            )).mappings().all()
            items = [(_aware({"h": r["hour"]})["h"], r["direction"], int(r["offered"] or 0),
                      int(r["answered"] or 0)) for r in rows]
        else:  # e.g. Asia/Kolkata: bucket each raw call instead
            c = calls_t.c
            cond = [c.tenant == q.tenant, c.state == "ended", c.created_at >= q.start, c.created_at < q.end]
            if q.agents is not None:
                cond.append(c.agent.in_(sorted(q.agents)))
            if q.queue is not None:
                cond.append(c.queue == q.queue)
            if q.direction is not None:
                cond.append(c.direction == q.direction)
            rows = (await conn.execute(sa.select(c.created_at, c.direction, c.outcome).where(*cond))).all()
            items = [(_aware({"h": r[0]})["h"], r[1], 1, int(r[2] == "answered")) for r in rows]
    for at, direction, offered, answered in items:
        _add_cell(cells[weekday_hour(at, q.tz)], direction, offered, answered)
    return list(cells.values())


def _add_cell(cell: dict[str, Any], direction: str, offered: int, answered: int) -> None:
    cell["calls"] += offered
    cell["answered"] += answered
    cell["not_answered"] += offered - answered
    cell["outbound" if direction == "outbound" else "inbound"] += offered


# --------------------------------------------------------------------------- call lists

def contact_name(first: str | None, last: str | None) -> str | None:
    name = " ".join(p for p in (first, last) if p)
    return name or None


async def calls_list_report(engine: AsyncEngine, settings: Settings, q: StatsQuery, kind: str = "all",
                            pending_only: bool = False, limit: int = 1000) -> list[dict[str, Any]]:
    """Abandoned and missed inbound calls, with the caller's CRM match and whether we called back.

    `called_back`: a later answered call (either direction) with the same customer number.
    """
    c = calls_t.c
    outcomes = {"abandoned": ["abandoned"], "missed": ["missed"], "all": ["abandoned", "missed"]}[kind]
    cond = [c.tenant == q.tenant, c.state == "ended", c.direction != "outbound",
            c.created_at >= q.start, c.created_at < q.end, c.outcome.in_(outcomes)]
    if q.queue is not None:
        cond.append(c.queue == q.queue)
    stmt = (
        sa.select(c.call_id, c.created_at, c.ended_at, c.queue, c.agent, c.from_number, c.to_number,
                  c.outcome, c.wait_s, c.agents_rung, c.contact_id, contacts.c.first_name,
                  contacts.c.last_name, contacts.c.account_id, accounts.c.name.label("account_name"))
        .select_from(calls_t.outerjoin(contacts, contacts.c.id == c.contact_id)
                     .outerjoin(accounts, accounts.c.id == contacts.c.account_id))
        .where(*cond).order_by(c.created_at.desc())
    )
    async with engine.connect() as conn:
        rows = [_aware(dict(r)) for r in (await conn.execute(stmt)).mappings().all()]
        if q.agents is not None:
            rows = [r for r in rows if set(r["agents_rung"] or ()) & q.agents or r["agent"] in q.agents]
        rows = rows[: limit * 4]
        numbers = sorted({r["from_number"] for r in rows if r["from_number"]})
        later: dict[str, list[datetime]] = {}
        for i in range(0, len(numbers), 500):
            part = numbers[i : i + 500]
            found = (await conn.execute(
                sa.select(c.from_number, c.to_number, c.direction, c.created_at)
                .where(c.tenant == q.tenant, c.outcome == "answered", c.created_at >= q.start,
                       sa.or_(c.from_number.in_(part), c.to_number.in_(part)))
            )).all()
            for f, t, d, at in found:
                num = t if d == "outbound" else f
                later.setdefault(num, []).append(_aware({"a": at})["a"])
    out = []
    for r in rows:
        sl_short = thresholds(settings, r["queue"])[1]
        after = sorted(t for t in later.get(r["from_number"], []) if t > r["created_at"])
        item = {
            "call_id": r["call_id"],
            "at": r["created_at"].isoformat(),
            "kind": r["outcome"],
            "queue": r["queue"],
            "from_number": r["from_number"],
            "to_number": r["to_number"],
            "wait_s": r["wait_s"],
            "short_abandon": r["outcome"] == "abandoned" and (r["wait_s"] or 0) < sl_short,
            "agents_rung": list(r["agents_rung"] or []),
            "contact": ({"id": r["contact_id"], "name": contact_name(r["first_name"], r["last_name"]),
                         "account_id": r["account_id"], "account_name": r["account_name"]}
                        if r["contact_id"] else None),
            "called_back": bool(after),
            "called_back_at": after[0].isoformat() if after else None,
        }
        if pending_only and item["called_back"]:
            continue
        out.append(item)
        if len(out) >= limit:
            break
    return out
