"""A small call history whose statistics can be computed by hand (docs/metrics.md).

Site time zone Europe/Paris (UTC+1 on these dates). Queues: support (service level
20 s, short abandon 5 s), sales (30 s, 10 s). Agents: alice, bob (team A), carol (team B).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.config import AgentSettings, QueueSettings, Settings, SiteSettings
from cti.store import tables as t

MON = datetime(2026, 3, 2, tzinfo=UTC)   # a Monday
TUE = MON + timedelta(days=1)


def settings() -> Settings:
    return Settings(
        site=SiteSettings(tenant="default", timezone="Europe/Paris"),
        agents=[AgentSettings(id="alice", name="Alice Martin", team="A"),
                AgentSettings(id="bob", name="Bob Durand", team="A"),
                AgentSettings(id="carol", name="Carol Petit", team="B")],
        queues=[QueueSettings(name="support", service_level_s=20, short_abandon_s=5),
                QueueSettings(name="sales", service_level_s=30, short_abandon_s=10)],
    )


def call(call_id: str, at: datetime, *, direction: str = "inbound", queue: str | None = None,
         agent: str | None = None, outcome: str = "answered", wait: float = 0.0, talk: float = 0.0,
         hold: float = 0.0, ring: float = 0.0, rung: tuple[str, ...] = (), from_number: str = "+33100000000",
         to_number: str = "+33900000000", contact_id: str | None = None, account_id: str | None = None,
         disposition: str | None = None, state: str = "ended") -> dict[str, Any]:
    """A calls-table row (durations consistent with the timestamps)."""
    waiting = state in ("new", "queued", "ringing")
    answered_at = at + timedelta(seconds=wait) if outcome == "answered" and not waiting else None
    ended_at = (answered_at + timedelta(seconds=talk + hold)) if answered_at else at + timedelta(seconds=wait)
    return {
        "call_id": call_id, "tenant": "default", "provider": "sim", "provider_call_id": call_id,
        "direction": direction, "state": state, "from_number": from_number, "to_number": to_number,
        "queue": queue, "agent": agent, "outcome": outcome if state == "ended" else None,
        "end_cause": "normal", "created_at": at, "queued_at": at if queue else None,
        "ringing_at": at if rung else None, "answered_at": answered_at,
        "ended_at": ended_at if state == "ended" else None, "ring_s": ring, "talk_s": talk, "hold_s": hold,
        "wait_s": wait, "agents_rung": list(rung), "events": 3, "contact_id": contact_id,
        "account_id": account_id, "priority": 0, "disposition": disposition,
    }


def hand_calls() -> list[dict[str, Any]]:
    h = timedelta(hours=1)
    m = timedelta(minutes=1)
    jean = "+33611111111"
    return [
        call("c01", MON + 9 * h, queue="support", agent="alice", wait=10, talk=100, hold=20, rung=("alice",)),
        call("c02", MON + 9 * h + 10 * m, queue="support", agent="alice", wait=25, talk=200,
             rung=("bob", "alice"), from_number=jean, contact_id="ct1", disposition="escalated"),
        call("c03", MON + 9 * h + 20 * m, queue="support", outcome="abandoned", wait=3),
        call("c04", MON + 10 * h + 5 * m, queue="support", agent="bob", outcome="abandoned", wait=40,
             rung=("bob",), from_number=jean, contact_id="ct1"),
        call("c05", MON + 10 * h + 30 * m, queue="support", agent="bob", wait=20, talk=60, rung=("bob",),
             from_number="+33622222222", contact_id="ct2", disposition="follow_up"),
        call("c06", MON + 10 * h + 40 * m, queue="sales", outcome="abandoned", wait=5),
        call("c07", MON + 11 * h, direction="outbound", agent="alice", talk=50, from_number="+33900000000",
             to_number=jean, contact_id="ct1", disposition="resolved"),
        call("c08", MON + 11 * h + 30 * m, direction="outbound", agent="carol", outcome="missed"),
        call("c09", TUE + 8 * h, queue="support", outcome="abandoned", wait=5, from_number="+33633333333"),
        call("c10", TUE + 14 * h, agent="carol", outcome="missed", rung=("carol",), from_number="+33644444444"),
        # still in progress: never counted by the rollup
        call("c11", TUE + 15 * h, queue="support", state="queued"),
    ]


def state_log() -> list[dict[str, Any]]:
    h = timedelta(hours=1)
    m = timedelta(minutes=1)
    rows = [("available", MON + 8 * h, MON + 9 * h), ("on_call", MON + 9 * h, MON + 9 * h + 30 * m),
            ("wrap_up", MON + 9 * h + 30 * m, MON + 9 * h + 40 * m), ("away", MON + 9 * h + 40 * m, MON + 10 * h),
            ("offline", MON + 10 * h, None)]
    return [{"event_id": f"s{i}", "tenant": "default", "agent": "alice", "state": s, "reason": None,
             "started_at": a, "ended_at": b} for i, (s, a, b) in enumerate(rows)]


async def load_crm(engine: AsyncEngine) -> None:
    now = MON
    async with engine.begin() as conn:
        await conn.execute(sa.insert(t.accounts), [
            {"id": "acc1", "tenant": "default", "name": "Acme", "fields": {}},
            {"id": "acc2", "tenant": "default", "name": "Globex", "fields": {}},
        ])
        await conn.execute(sa.insert(t.contacts), [
            {"id": "ct1", "tenant": "default", "account_id": "acc1", "first_name": "Jean", "last_name": "Dupont",
             "fields": {}},
            {"id": "ct2", "tenant": "default", "account_id": "acc2", "first_name": "Marie", "last_name": "Curie",
             "fields": {}},
            {"id": "ct3", "tenant": "default", "account_id": "acc2", "first_name": "Paul", "last_name": "Martin",
             "fields": {}},
        ])
        await conn.execute(sa.insert(t.transcripts), [
            {"call_id": "c02", "tenant": "default", "status": "done", "summary": {"sentiment": "negative"},
             "created_at": now, "updated_at": now},
            {"call_id": "c05", "tenant": "default", "status": "done", "summary": {"sentiment": "neutral"},
             "created_at": now, "updated_at": now},
        ])
        await conn.execute(sa.insert(t.callbacks), [
            {"id": "cb1", "tenant": "default", "queue": "support", "number": "+33633333333", "call_id": "c09",
             "requested_at": MON + timedelta(hours=9), "position_at": MON, "state": "done"},
            {"id": "cb2", "tenant": "default", "queue": "support", "number": "+33600000000", "call_id": None,
             "requested_at": MON + timedelta(hours=10), "position_at": MON, "state": "waiting"},
        ])
        await conn.execute(sa.insert(t.agent_state_log), state_log())


async def insert_calls(engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    async with engine.begin() as conn:
        for i in range(0, len(rows), 500):
            await conn.execute(sa.insert(t.calls), rows[i : i + 500])


def random_calls(n: int, seed: int = 7, start: datetime = MON, days: int = 14,
                 agents: list[str] | None = None, queues: list[str | None] | None = None,
                 prefix: str = "r") -> list[dict[str, Any]]:
    """Random but consistent calls (whole-second durations, so float sums are exact)."""
    rnd = random.Random(seed)
    agents = agents or ["alice", "bob", "carol", "dave"]
    queues = queues or ["support", "sales", None]
    out = []
    for i in range(n):
        at = start + timedelta(seconds=rnd.randrange(days * 86400))
        direction = rnd.choice(["inbound"] * 5 + ["outbound"] * 2 + ["internal"])
        queue = rnd.choice(queues) if direction != "outbound" else None
        rung = tuple(rnd.sample(agents, rnd.randint(0, 3))) if direction != "outbound" else ()
        outcome = rnd.choice(["answered"] * 6 + ["abandoned", "missed", "voicemail", "busy"])
        if outcome == "abandoned" and not queue:
            outcome = "missed"
        agent = rnd.choice(rung) if rung and outcome == "answered" else (rnd.choice(agents)
                                                                       if direction == "outbound" else None)
        if direction != "outbound" and outcome == "answered" and not rung:
            agent = rnd.choice(agents)
        out.append(call(f"{prefix}{i:05d}", at, direction=direction, queue=queue, agent=agent, outcome=outcome,
                        wait=rnd.randint(0, 90) if direction != "outbound" else 0,
                        talk=rnd.randint(5, 900) if outcome == "answered" else 0,
                        hold=rnd.randint(0, 60) if outcome == "answered" else 0,
                        ring=rnd.randint(0, 30), rung=rung,
                        from_number=f"+336{rnd.randrange(40):08d}" if direction != "outbound" else "+33900000000",
                        to_number=f"+336{rnd.randrange(40):08d}" if direction == "outbound" else "+33900000000"))
    return out
