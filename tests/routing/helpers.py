"""Small builders for routing tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cti.config import Settings
from cti.routing.engine import Engine, LegConnected, LegEnded, Offer, Overflow, StateChange
from cti.routing.queues import compile_routing

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC).timestamp()  # Monday 10:00 in Paris


def settings(agents: list[dict[str, Any]] | None = None, queues: list[dict[str, Any]] | None = None,
             rules: list[dict[str, Any]] | None = None) -> Settings:
    agents = agents if agents is not None else [
        {"id": "alice", "name": "Alice", "skills": {"fr": 8, "billing": 7}},
        {"id": "bob", "name": "Bob", "skills": {"fr": 9, "internet": 8}},
        {"id": "carol", "name": "Carol", "skills": {"fr": 3, "internet": 4}},
    ]
    for a in agents:
        a.setdefault("name", a["id"].title())
        a.setdefault("endpoints", {"pbx": f"PJSIP/{a['id']}"})
    queues = queues if queues is not None else [{"name": "support", "requires": "fr >= 5"}]
    return Settings.model_validate({"agents": agents, "queues": queues, "priority_rules": rules or []})


def engine(s: Settings | None = None, *, available: tuple[str, ...] | None = None, at: float = T0,
           ring_grace_s: float = 0.0) -> Engine:
    s = s or settings()
    e = Engine(compile_routing(s), ring_grace_s=ring_grace_s)
    names = available if available is not None else tuple(a.id for a in s.agents)
    for i, a in enumerate(names):
        e.set_agent_state(a, "available", None, at + i * 0.001)  # a < b < c: a idle longest
    return e


def offers(actions: list[Any]) -> list[Offer]:
    return [a for a in actions if isinstance(a, Offer)]


def overflows(actions: list[Any]) -> list[Overflow]:
    return [a for a in actions if isinstance(a, Overflow)]


def states(actions: list[Any]) -> list[tuple[str, str]]:
    return [(a.agent, a.state.value) for a in actions if isinstance(a, StateChange)]


def legs(actions: list[Any]) -> list[tuple[str, str, str]]:
    return [("end" if isinstance(a, LegEnded) else "conn", a.agent, a.call_id) for a in actions
            if isinstance(a, LegEnded | LegConnected)]


def chosen(actions: list[Any]) -> list[str]:
    return [agent for o in offers(actions) for agent, _ in o.targets]
