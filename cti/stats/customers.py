"""Customer indicators (per contact or account), the at-risk ranking, "contacted since".

Definitions in docs/metrics.md ("Customers"). `customer_indicators` and
`rank_at_risk` are pure; the async functions only fetch rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.stats.query import StatsQuery
from cti.store.tables import accounts, activities, contacts, transcripts
from cti.store.tables import calls as calls_t

UNRESOLVED_DISPOSITIONS = frozenset({"follow_up", "unresolved", "callback", "no_resolution", "pending"})
ESCALATED_DISPOSITIONS = frozenset({"escalated", "escalation"})
NEGATIVE_SENTIMENTS = frozenset({"negative", "very_negative", "angry", "frustrated"})
REPEAT_WINDOW = timedelta(days=7)
LONG_WAIT_S = 60.0

# weight of each indicator in the at-risk score (documented in docs/metrics.md)
RISK_WEIGHTS = {
    "escalated": 3,
    "negative_sentiment": 3,
    "repeat_calls": 2,
    "unresolved": 2,
    "abandoned": 1,
    "long_waits": 1,
}


def _aware(v: datetime | None) -> datetime | None:
    return v.replace(tzinfo=UTC) if v is not None and v.tzinfo is None else v


def disposition_of(row: Mapping[str, Any]) -> str | None:
    """The call's disposition: wrap-up code, else the activity's, else the summary's."""
    summary = row.get("summary") if isinstance(row.get("summary"), dict) else {}
    d = row.get("disposition") or row.get("activity_disposition") or summary.get("disposition")
    return str(d).lower() if d else None


def sentiment_of(row: Mapping[str, Any]) -> str | None:
    summary = row.get("summary")
    if not isinstance(summary, dict):
        return None
    s = summary.get("sentiment")
    if isinstance(s, dict):  # {"label": "negative", "score": ...}
        s = s.get("label")
    return str(s).lower() if s else None


def customer_indicators(rows: Iterable[Mapping[str, Any]], key: str, start: datetime, end: datetime,
                        long_wait_s: float = LONG_WAIT_S) -> dict[str, dict[str, Any]]:
    """Indicators per customer (`key` = "contact_id" or "account_id") for calls in [start, end).

    Rows may include calls up to 7 days before `start`: they only serve to detect repeat calls.
    """
    by: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        if r.get(key):
            by.setdefault(r[key], []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for cust, items in by.items():
        items.sort(key=lambda r: r["created_at"])
        ind = {"calls": 0, "answered": 0, "inbound": 0, "outbound": 0, "repeat_calls": 0, "unresolved": 0,
               "escalated": 0, "abandoned": 0, "negative_sentiment": 0, "long_waits": 0,
               "last_call_at": None, "last_contact_at": None}
        prev: datetime | None = None
        for r in items:
            at = r["created_at"]
            in_range = start <= at < end
            inbound = r.get("direction") != "outbound"
            if in_range:
                ind["calls"] += 1
                ind["inbound" if inbound else "outbound"] += 1
                ind["last_call_at"] = at
                if r.get("outcome") == "answered":
                    ind["answered"] += 1
                    ind["last_contact_at"] = at
                if inbound and prev is not None and at - prev <= REPEAT_WINDOW:
                    ind["repeat_calls"] += 1
                disp = disposition_of(r)
                if disp in UNRESOLVED_DISPOSITIONS:
                    ind["unresolved"] += 1
                if disp in ESCALATED_DISPOSITIONS:
                    ind["escalated"] += 1
                if inbound and r.get("outcome") in ("abandoned", "missed"):
                    ind["abandoned"] += 1
                if sentiment_of(r) in NEGATIVE_SENTIMENTS:
                    ind["negative_sentiment"] += 1
                if inbound and float(r.get("wait_s") or 0.0) > long_wait_s:
                    ind["long_waits"] += 1
            prev = at
        if ind["calls"]:
            ind["risk_score"], ind["reasons"] = risk_of(ind)
            out[cust] = ind
    return out


def risk_of(ind: Mapping[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """Score = sum of weight x count over the indicators; reasons = the non-zero ones, heaviest first."""
    reasons = [{"reason": k, "count": int(ind.get(k) or 0), "weight": w}
               for k, w in RISK_WEIGHTS.items() if ind.get(k)]
    reasons.sort(key=lambda r: (-r["weight"] * r["count"], r["reason"]))
    return sum(r["weight"] * r["count"] for r in reasons), reasons


def rank_at_risk(indicators: Mapping[str, Mapping[str, Any]], limit: int = 50) -> list[tuple[str, Mapping]]:
    """Customers with a positive score, highest first (ties: most recent call first, then id)."""
    items = [(k, v) for k, v in indicators.items() if v.get("risk_score", 0) > 0]
    items.sort(key=lambda kv: (-kv[1]["risk_score"], -(kv[1]["last_call_at"].timestamp()), kv[0]))
    return items[:limit]


async def _call_rows(engine: AsyncEngine, tenant: str, start: datetime, end: datetime,
                     contact_id: str | None = None, account_id: str | None = None) -> list[dict[str, Any]]:
    c = calls_t.c
    account = sa.func.coalesce(c.account_id, contacts.c.account_id).label("account_id")
    cond = [c.tenant == tenant, c.state == "ended", c.created_at >= start - REPEAT_WINDOW, c.created_at < end]
    if contact_id is not None:
        cond.append(c.contact_id == contact_id)
    if account_id is not None:
        cond.append(sa.func.coalesce(c.account_id, contacts.c.account_id) == account_id)
    else:
        cond.append(sa.or_(c.contact_id.is_not(None), c.account_id.is_not(None)))
    stmt = (
        sa.select(c.call_id, c.created_at, c.direction, c.outcome, c.wait_s, c.talk_s, c.agent, c.queue,
                  c.from_number, c.to_number, c.contact_id, account, c.disposition,
                  activities.c.disposition.label("activity_disposition"), transcripts.c.summary)
        .select_from(calls_t.outerjoin(contacts, contacts.c.id == c.contact_id)
                     .outerjoin(activities, activities.c.call_id == c.call_id)
                     .outerjoin(transcripts, transcripts.c.call_id == c.call_id))
        .where(*cond)
    )
    async with engine.connect() as conn:
        rows = [dict(r) for r in (await conn.execute(stmt)).mappings().all()]
    for r in rows:
        r["created_at"] = _aware(r["created_at"])
    return rows


async def _names(engine: AsyncEngine, tenant: str) -> tuple[dict[str, dict], dict[str, str]]:
    async with engine.connect() as conn:
        crows = (await conn.execute(
            sa.select(contacts.c.id, contacts.c.first_name, contacts.c.last_name, contacts.c.account_id,
                      accounts.c.name.label("account_name"))
            .select_from(contacts.outerjoin(accounts, accounts.c.id == contacts.c.account_id))
            .where(contacts.c.tenant == tenant)
        )).mappings().all()
        arows = (await conn.execute(
            sa.select(accounts.c.id, accounts.c.name).where(accounts.c.tenant == tenant))).all()
    cmap = {r["id"]: {"name": " ".join(p for p in (r["first_name"], r["last_name"]) if p) or None,
                      "account_id": r["account_id"], "account_name": r["account_name"]} for r in crows}
    return cmap, {r[0]: r[1] for r in arows}


def _iso(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


async def customers_report(engine: AsyncEngine, q: StatsQuery, group: str = "contact",
                           contact_id: str | None = None, account_id: str | None = None,
                           long_wait_s: float = LONG_WAIT_S, limit: int = 500) -> list[dict[str, Any]]:
    """Per contact (or account) indicators over the range; one customer -> with its call history."""
    key = "contact_id" if group == "contact" else "account_id"
    rows = await _call_rows(engine, q.tenant, q.start, q.end, contact_id, account_id)
    ind = customer_indicators(rows, key, q.start, q.end, long_wait_s)
    cmap, amap = await _names(engine, q.tenant)
    single = contact_id is not None or account_id is not None
    out = []
    for cust, v in sorted(ind.items(), key=lambda kv: (-kv[1]["calls"], kv[0]))[:limit]:
        item: dict[str, Any] = {"id": cust}
        if key == "contact_id":
            info = cmap.get(cust, {})
            item.update(name=info.get("name"), account_id=info.get("account_id"),
                        account_name=info.get("account_name"))
        else:
            item.update(name=amap.get(cust))
        item.update({k: _iso(x) for k, x in v.items()})
        if single:
            item["history"] = [
                {"call_id": r["call_id"], "at": r["created_at"].isoformat(), "direction": r["direction"],
                 "outcome": r["outcome"], "agent": r["agent"], "queue": r["queue"], "wait_s": r["wait_s"],
                 "talk_s": r["talk_s"], "disposition": disposition_of(r), "sentiment": sentiment_of(r)}
                for r in sorted(rows, key=lambda r: r["created_at"], reverse=True)
                if r.get(key) == cust and q.start <= r["created_at"] < q.end
            ]
        out.append(item)
    return out


async def at_risk_report(engine: AsyncEngine, q: StatsQuery, long_wait_s: float = LONG_WAIT_S,
                         limit: int = 50) -> list[dict[str, Any]]:
    """Accounts ranked by risk score, with the reasons (indicator counts) shown."""
    rows = await _call_rows(engine, q.tenant, q.start, q.end)
    ind = customer_indicators(rows, "account_id", q.start, q.end, long_wait_s)
    _, amap = await _names(engine, q.tenant)
    out = []
    for rank, (acc, v) in enumerate(rank_at_risk(ind, limit), start=1):
        out.append({"rank": rank, "account_id": acc, "name": amap.get(acc),
                    **{k: _iso(x) for k, x in v.items()}})
    return out


async def contacted_report(engine: AsyncEngine, tenant: str, since: datetime, spoken: bool = True,
                           limit: int = 10_000) -> list[dict[str, Any]]:
    """Contacts we spoke with (an answered call) since `since`, or - spoken=False - those we did not."""
    c = calls_t.c
    last = (
        sa.select(c.contact_id, sa.func.max(c.created_at).label("last_contact_at"),
                  sa.func.count().label("calls"))
        .where(c.tenant == tenant, c.outcome == "answered", c.contact_id.is_not(None))
        .group_by(c.contact_id).subquery()
    )
    since_calls = (
        sa.select(c.contact_id, sa.func.count().label("n"))
        .where(c.tenant == tenant, c.outcome == "answered", c.contact_id.is_not(None), c.created_at >= since)
        .group_by(c.contact_id).subquery()
    )
    stmt = (
        sa.select(contacts.c.id, contacts.c.first_name, contacts.c.last_name, contacts.c.email,
                  contacts.c.account_id, accounts.c.name.label("account_name"),
                  last.c.last_contact_at, sa.func.coalesce(since_calls.c.n, 0).label("calls_since"))
        .select_from(contacts.outerjoin(accounts, accounts.c.id == contacts.c.account_id)
                     .outerjoin(last, last.c.contact_id == contacts.c.id)
                     .outerjoin(since_calls, since_calls.c.contact_id == contacts.c.id))
        .where(contacts.c.tenant == tenant,
               since_calls.c.n.is_not(None) if spoken else since_calls.c.n.is_(None))
        .order_by(contacts.c.last_name, contacts.c.first_name, contacts.c.id)
        .limit(limit)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).mappings().all()
    return [{"contact_id": r["id"],
             "name": " ".join(p for p in (r["first_name"], r["last_name"]) if p) or None,
             "email": r["email"], "account_id": r["account_id"], "account_name": r["account_name"],
             "last_contact_at": _iso(_aware(r["last_contact_at"])), "calls_since": int(r["calls_since"])}
            for r in rows]
