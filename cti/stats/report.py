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
    KEPT,
    KEPT_SHORT,
    MAX_FIELDS,
    SUM_FIELDS,
    WRAP_UP_CLOCK_SKEW,
    RollupDelta,
    add_kept_for_callback,
    add_sums,
    bucket_start,
    call_deltas,
    call_start,
    derive_agent,
    derive_queue,
    empty_sums,
    hour_of,
    keep_wrap_up_of,
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


def whole_hours(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The whole UTC hours inside [start, end), as [first, last) hour starts (first >= last: none)."""
    first = hour_of(start)
    if first < start:
        first += timedelta(hours=1)
    return first, hour_of(end)


def split_range(q: StatsQuery, whole_hour_zone: bool = True) -> tuple[tuple[datetime, datetime],
                                                                      list[tuple[datetime, datetime]]]:
    """(rollup hours [first, last), raw spans): the rollups answer whole UTC hours only.

    A bound inside an hour (a datetime, or a local midnight in a zone whose offset is not
    whole hours) leaves a partial hour at each end that the call records answer instead, so
    a report counts exactly the calls that started in [start, end). Pure.
    whole_hour_zone=False (buckets in a half-hour zone): every local hour straddles two
    rollup hours, so all of it comes from the call records.
    """
    first, last = whole_hours(q.start, q.end)
    if not whole_hour_zone or first >= last:
        return (q.start, q.start), [(q.start, q.end)]
    edges = [(s, e) for s, e in ((q.start, first), (last, q.end)) if s < e]
    return (first, last), edges


def keeps_delta(d: RollupDelta, q: StatsQuery, scope: frozenset[str] | None, per_agent: bool) -> bool:
    """The raw-path mirror of `_rollup_where`: whether a call's rollup row answers the query."""
    if scope is not None:
        if d.agent not in scope - {ALL_AGENTS, ""}:
            return False
    elif per_agent:
        if d.agent in ("", ALL_AGENTS):
            return False
    elif d.agent != ALL_AGENTS:
        return False
    if per_agent:
        if d.queue != (q.queue if q.queue is not None else ALL_QUEUES):
            return False
    elif d.queue == ALL_QUEUES or (q.queue is not None and d.queue != q.queue):
        return False
    return q.direction is None or d.direction == q.direction


async def _raw_rows(conn: Any, settings: Settings, q: StatsQuery, spans: list[tuple[datetime, datetime]],
                    agents: Iterable[str] | None = None, per_agent: bool = False) -> list[dict[str, Any]]:
    """Rows shaped like stats_hourly's (hour = the call's exact start) from the calls in `spans`.

    Built with the rollup's own `call_deltas`, so both paths count a call the same way.
    """
    if not spans:
        return []
    c = calls_t.c
    cond = [c.tenant == q.tenant, c.state == "ended",
            sa.or_(*[sa.and_(c.created_at >= s, c.created_at < e) for s, e in spans])]
    if q.direction is not None:
        cond.append(c.direction == q.direction)
    if q.queue is not None:
        cond.append(c.queue == q.queue)
    scope = q.agents if agents is None else frozenset(agents)
    out: list[dict[str, Any]] = []
    for r in (await conn.execute(sa.select(calls_t).where(*cond))).mappings().all():
        row = _aware(dict(r))
        start = call_start(row)
        if start is None:
            continue
        for d in call_deltas(row, *thresholds(settings, row.get("queue"))):
            if keeps_delta(d, q, scope, per_agent):
                out.append({"hour": start, "queue": d.queue, "agent": d.agent, "direction": d.direction,
                            **d.values()})
    return out


async def _kept_for_callback(conn: Any, q: StatsQuery) -> list[dict[str, Any]]:
    """Abandoned queue calls of the period whose caller had asked for a callback (a `callbacks`
    row names the call). Under an agent/team filter there are none to correct: unanswered
    calls belong to no agent, so they are not in the figures at all.
    """
    if q.agents is not None:
        return []
    c = calls_t.c
    cond = [c.tenant == q.tenant, c.state == "ended", c.outcome == "abandoned", c.direction != "outbound",
            c.queue.is_not(None), c.queue != "", c.created_at >= q.start, c.created_at < q.end,
            sa.exists().where(callbacks.c.call_id == c.call_id, callbacks.c.tenant == q.tenant)]
    if q.queue is not None:
        cond.append(c.queue == q.queue)
    if q.direction is not None:
        cond.append(c.direction == q.direction)
    rows = (await conn.execute(sa.select(c.created_at, c.queue, c.wait_s).where(*cond))).mappings().all()
    return [_aware(dict(r)) for r in rows]


def _rollup_where(q: StatsQuery, agents: Iterable[str] | None = None, per_agent: bool = False,
                  hours: tuple[datetime, datetime] | None = None) -> list[Any]:
    """Which rollup rows answer the query (docs/metrics.md, "Rollup").

    per_agent (the agents report): each agent's ALL_QUEUES rows, or its rows of q.queue.
    Otherwise: the ALL_AGENTS rows, or - agents filtered - those agents' per-queue rows.
    hours: the [first, last) rollup hours to read (default: the whole hours of the query;
    `_raw_rows` answers the partial ones, see `split_range`).
    """
    first, last = hours if hours is not None else split_range(q)[0]
    cond: list[Any] = [H.tenant == q.tenant, H.hour >= first, H.hour < last]
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
        rows = [*rows, *await _raw_rows(conn, settings, q, split_range(q)[1], scope, per_agent=True)]
        medians = await _talk_medians(conn, q, scope) if with_median else {}
        log_cond = [agent_state_log.c.tenant == q.tenant, agent_state_log.c.started_at < q.end,
                    sa.or_(agent_state_log.c.ended_at.is_(None), agent_state_log.c.ended_at > q.start)]
        if scope is not None:
            log_cond.append(agent_state_log.c.agent.in_(sorted(scope)))
        intervals = (await conn.execute(
            sa.select(agent_state_log.c.agent, agent_state_log.c.state,
                      agent_state_log.c.started_at, agent_state_log.c.ended_at).where(*log_cond)
        )).mappings().all()
        filtered = q.queue is not None or q.direction is not None
        ended = await _answered_calls_by_agent(conn, q, scope) if filtered else {}
    inbound: dict[str, dict[str, float]] = {}
    outbound: dict[str, dict[str, float]] = {}
    for r in rows:
        target = outbound if r["direction"] == "outbound" else inbound
        add_sums(target.setdefault(r["agent"], empty_sums()), r)
    by_agent_iv: dict[str, list[dict[str, Any]]] = {}
    for iv in intervals:
        by_agent_iv.setdefault(iv["agent"], []).append(_aware(dict(iv)))
    if filtered:
        def keep(c: dict[str, Any]) -> bool:
            return (q.queue is None or c["queue"] == q.queue) and (q.direction is None
                                                                  or c["direction"] == q.direction)
        by_agent_iv = {a: keep_wrap_up_of(ivs, ended.get(a, []), keep) for a, ivs in by_agent_iv.items()}
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


async def _answered_calls_by_agent(conn: Any, q: StatsQuery,
                                   scope: frozenset[str] | None) -> dict[str, list[dict[str, Any]]]:
    """Each agent's answered calls (any queue, any direction) that ended around the period,
    sorted by end: what `keep_wrap_up_of` attributes wrap-up spells to."""
    c = calls_t.c
    cond = [c.tenant == q.tenant, c.outcome == "answered", c.agent.is_not(None),
            c.ended_at >= q.start - timedelta(days=1), c.ended_at < q.end + WRAP_UP_CLOCK_SKEW]
    if scope is not None:
        cond.append(c.agent.in_(sorted(scope)))
    out: dict[str, list[dict[str, Any]]] = {}
    stmt = sa.select(c.agent, c.ended_at, c.queue, c.direction).where(*cond).order_by(c.ended_at)
    for r in (await conn.execute(stmt)).mappings().all():
        out.setdefault(r["agent"], []).append(_aware(dict(r)))
    return out


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
        raw = [r for r in await _raw_rows(conn, settings, q, split_range(q)[1])
               if r["queue"] and r["direction"] != "outbound"]
        kept = await _kept_for_callback(conn, q)
        cb = callbacks.c
        cb_cond = [cb.tenant == q.tenant, cb.requested_at >= q.start, cb.requested_at < q.end]
        if q.queue is not None:
            cb_cond.append(cb.queue == q.queue)
        cb_rows = (await conn.execute(
            sa.select(cb.queue, sa.func.count().label("requested"),
                      sa.func.sum(sa.case((cb.state == "done", 1), else_=0)).label("done"))
            .where(*cb_cond).group_by(cb.queue)
        )).mappings().all()
    sums: dict[str, dict[str, float]] = {}
    for r in [*rows, *raw]:
        add_sums(sums.setdefault(r["queue"], empty_sums()), r)
    for k in kept:
        add_kept_for_callback(sums.setdefault(k["queue"], empty_sums()), float(k["wait_s"] or 0.0),
                              thresholds(settings, k["queue"])[1])
    cbs = {r["queue"]: (int(r["requested"] or 0), int(r["done"] or 0)) for r in cb_rows}
    names = set(sums) | set(cbs) | {qs.name for qs in settings.queues}
    if q.queue is not None:
        names = {q.queue}
    out = []
    total = empty_sums()
    for name in sorted(names):
        s = sums.get(name, empty_sums())
        add_sums(total, s)
        for f in (KEPT, KEPT_SHORT):  # not rollup columns: add_sums leaves them out
            total[f] = total.get(f, 0) + s.get(f, 0)
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
        "kept_for_callback": dq["kept_for_callback"],
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
    hours, spans = split_range(q, _whole_hour_offsets(q))
    async with engine.connect() as conn:
        rows = (await conn.execute(
            sa.select(bucket, H.direction, queued, *_sum_columns())
            .where(*_rollup_where(q, hours=hours)).group_by(bucket, H.direction, queued)
        )).mappings().all()
        raw = await _raw_rows(conn, settings, q, spans)
        kept = await _kept_for_callback(conn, q)
    acc: dict[datetime, tuple[dict, dict, dict]] = {}
    tagged = [(r, in_sql) for r in rows] + [({**r, "b": r["hour"], "queued": int(bool(r["queue"]))}, False)
                                            for r in raw]
    for r, local_midnight in tagged:
        if local_midnight:  # PostgreSQL bucketed it: a local wall-clock midnight
            b = r["b"].replace(tzinfo=q.tz).astimezone(UTC)
        else:
            b = bucket_start(_aware({"h": r["b"]})["h"], q.bucket, q.tz).astimezone(UTC)
        s_q, s_all, s_out = acc.setdefault(b, (empty_sums(), empty_sums(), empty_sums()))
        add_sums(s_all, r)
        if r["direction"] == "outbound":
            add_sums(s_out, r)
        elif r["queued"]:
            add_sums(s_q, r)
    for k in kept:
        b = bucket_start(k["created_at"], q.bucket, q.tz).astimezone(UTC)
        s_q = acc.setdefault(b, (empty_sums(), empty_sums(), empty_sums()))[0]
        add_kept_for_callback(s_q, float(k["wait_s"] or 0.0), thresholds(settings, k["queue"])[1])
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
    """168 cells (weekday 0=Monday x hour 0-23, site time zone): answered/not answered, in/outbound.

    Whole rollup hours in a whole-hour zone come from the rollups; the rest (partial hours at
    the bounds, or everything in a zone such as Asia/Kolkata) from the call records.
    """
    cells = {(d, h): {"weekday": d, "hour": h, "calls": 0, "answered": 0, "not_answered": 0,
                      "inbound": 0, "outbound": 0} for d in range(7) for h in range(24)}
    hours, spans = split_range(q, _whole_hour_offsets(q))
    items: list[tuple[datetime, str, int, int]] = []
    async with engine.connect() as conn:
        if hours[0] < hours[1] and conn.dialect.name == "postgresql":
            local = sa.func.timezone(q.tz.key, H.hour)
            dow = (sa.extract("isodow", local) - 1).label("dow")
            hr = sa.extract("hour", local).label("hr")
            rows = (await conn.execute(
                sa.select(dow, hr, H.direction, sa.func.sum(H.offered).label("offered"),
                          sa.func.sum(H.answered).label("answered"))
                .where(*_rollup_where(q, hours=hours)).group_by(dow, hr, H.direction)
            )).mappings().all()
            for r in rows:
                _add_cell(cells[(int(r["dow"]), int(r["hr"]))], r["direction"], int(r["offered"] or 0),
                          int(r["answered"] or 0))
        elif hours[0] < hours[1]:
            rows = (await conn.execute(
                sa.select(H.hour, H.direction, sa.func.sum(H.offered).label("offered"),
                          sa.func.sum(H.answered).label("answered"))
                .where(*_rollup_where(q, hours=hours)).group_by(H.hour, H.direction)
            )).mappings().all()
            items = [(_aware({"h": r["hour"]})["h"], r["direction"], int(r["offered"] or 0),
                      int(r["answered"] or 0)) for r in rows]
        items += [(r["hour"], r["direction"], int(r["offered"]), int(r["answered"]))
                  for r in await _raw_rows(conn, settings, q, spans)]
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
