"""Live view: calls waiting per queue, oldest wait, agents per state, calls in progress.

`live_snapshot` is pure: the web hub calls it on every change and pushes the
result to supervisors' dashboards as the `live` WebSocket message (docs/api.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cti.model import Call
from cti.stats.metrics import row_of

AGENT_STATES = ("available", "ringing", "on_call", "wrap_up", "away", "offline")


def _aware(v: Any) -> datetime | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = datetime.fromisoformat(v)
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v


def _plain(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, StrEnum):
        return str(v)
    if isinstance(v, tuple):
        return list(v)
    return v


def _agent_dict(a: Any) -> dict[str, Any]:
    if isinstance(a, Mapping):
        return dict(a)
    if is_dataclass(a) and not isinstance(a, type):
        return asdict(a)
    return dict(vars(a))


def is_waiting(row: Mapping[str, Any]) -> bool:
    """In a queue, not answered yet, not ended (ringing an agent still counts as waiting)."""
    return bool(row.get("queue")) and row.get("state") in ("new", "queued", "ringing") \
        and row.get("answered_at") is None


def live_snapshot(active_calls: Iterable[Call | Mapping[str, Any]], agent_states: Iterable[Any],
                  now: datetime, queues: Iterable[str] = ()) -> dict[str, Any]:
    """The `live` message: {"type": "live", "queues", "agents", "calls", "totals", "at"}.

    active_calls: calls not ended (Call or calls-table rows; ended ones are skipped).
    agent_states: AgentView dicts (id, name, team, state, reason, since, calls; optional
    `queues`: the queues the agent serves - without it the agent counts in every queue).
    queues: queue names to show even when nothing waits in them.
    """
    calls = [row_of(c) for c in active_calls]
    calls = [c for c in calls if c.get("state") != "ended"]
    agents = [_agent_dict(a) for a in agent_states]
    names = list(dict.fromkeys([*queues, *(c["queue"] for c in calls if c.get("queue"))]))
    by_queue: dict[str, dict[str, Any]] = {
        n: {"name": n, "waiting": 0, "oldest_wait_s": 0.0, "in_progress": 0,
            "agents": {s: 0 for s in AGENT_STATES}} for n in names
    }
    views = []
    for c in calls:
        q = c.get("queue")
        entered = _aware(c.get("queued_at") or c.get("created_at"))
        waited = max(0.0, (now - entered).total_seconds()) if entered else 0.0
        answered = _aware(c.get("answered_at"))
        if q and is_waiting(c):
            by_queue[q]["waiting"] += 1
            by_queue[q]["oldest_wait_s"] = round(max(by_queue[q]["oldest_wait_s"], waited), 1)
        elif q and answered is not None:
            by_queue[q]["in_progress"] += 1
        view = {k: _plain(v) for k, v in c.items()}
        view["waiting_s"] = round(waited, 1) if answered is None else None
        view["duration_s"] = round(max(0.0, (now - answered).total_seconds()), 1) if answered else None
        views.append(view)
    views.sort(key=lambda v: (v.get("answered_at") is not None, v.get("created_at") or ""))
    totals = {s: 0 for s in AGENT_STATES}
    agent_views = []
    for a in agents:
        state = str(a.get("state") or "offline")
        totals[state] = totals.get(state, 0) + 1
        for n in a.get("queues") or names:
            if n in by_queue:
                by_queue[n]["agents"][state] = by_queue[n]["agents"].get(state, 0) + 1
        since = _aware(a.get("since"))
        view = {k: _plain(v) for k, v in a.items()}
        view["state"] = state
        view["since"] = since.isoformat() if since else None
        view["time_in_state_s"] = round(max(0.0, (now - since).total_seconds()), 1) if since else None
        agent_views.append(view)
    agent_views.sort(key=lambda v: str(v.get("id")))
    in_progress = sum(1 for c in calls if c.get("answered_at") is not None)
    return {
        "type": "live",
        "queues": list(by_queue.values()),
        "agents": agent_views,
        "calls": views,
        "totals": {"waiting": sum(q["waiting"] for q in by_queue.values()),
                   "oldest_wait_s": max((q["oldest_wait_s"] for q in by_queue.values()), default=0.0),
                   "in_progress": in_progress, "agents": totals},
        "at": now.isoformat(),
    }


async def live_from_store(engine: Any, settings: Any, now: datetime) -> dict[str, Any]:
    """`live_snapshot` from the store's active call rows and agents table (no router running)."""
    import sqlalchemy as sa

    from cti.store.tables import accounts, contacts
    from cti.store.tables import agents as agents_t
    from cti.store.tables import calls as calls_t

    tenant = settings.site.tenant
    c = calls_t.c
    stmt = (
        sa.select(calls_t, contacts.c.first_name, contacts.c.last_name, accounts.c.name.label("account_name"))
        .select_from(calls_t.outerjoin(contacts, contacts.c.id == c.contact_id)
                     .outerjoin(accounts, accounts.c.id == contacts.c.account_id))
        .where(c.tenant == tenant, c.state != "ended")
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).mappings().all()
        arows = (await conn.execute(sa.select(agents_t).where(agents_t.c.tenant == tenant))).mappings().all()
    calls = []
    for r in rows:
        d = {k: r[k] for k in calls_t.c.keys()}
        for k, v in d.items():
            if isinstance(v, datetime):
                d[k] = _aware(v)
        name = " ".join(p for p in (r["first_name"], r["last_name"]) if p) or None
        d["contact"] = ({"id": r["contact_id"], "name": name, "account_name": r["account_name"]}
                        if r["contact_id"] else None)
        calls.append(d)
    agents: dict[str, dict[str, Any]] = {
        a.id: {"id": a.id, "name": a.name, "team": a.team, "state": "offline", "reason": None, "since": None,
               "calls": []} for a in settings.agents
    }
    for r in arows:
        agents[r["id"]] = {"id": r["id"], "name": r["name"], "team": r["team"], "state": r["state"],
                           "reason": r["state_reason"], "since": _aware(r["state_since"]), "calls": []}
    for cl in calls:
        if cl.get("agent") in agents:
            agents[cl["agent"]]["calls"].append(cl["call_id"])
    return live_snapshot(calls, agents.values(), now, [q.name for q in settings.queues])
