"""live_snapshot: calls waiting per queue, oldest wait, agents per state, calls in progress."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cti.model import Call, CallState, Direction
from cti.stats.live import live_snapshot
from cti.stats.service import Viewer, scope_live

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _call(cid: str, state: CallState, queue: str | None, entered_s: float, answered_s: float | None = None,
          agent: str | None = None) -> Call:
    return Call(call_id=cid, tenant="default", provider="sim", provider_call_id=cid, direction=Direction.INBOUND,
                state=state, queue=queue, agent=agent, created_at=NOW - timedelta(seconds=entered_s),
                queued_at=NOW - timedelta(seconds=entered_s) if queue else None,
                answered_at=NOW - timedelta(seconds=answered_s) if answered_s is not None else None)


def test_waiting_oldest_and_in_progress():
    calls = [
        _call("a", CallState.QUEUED, "support", 30),
        _call("b", CallState.RINGING, "support", 75, agent="bob"),   # ringing an agent: still waiting
        _call("c", CallState.ANSWERED, "support", 200, answered_s=120, agent="alice"),
        _call("d", CallState.QUEUED, "sales", 5),
        _call("e", CallState.ENDED, "sales", 500),                   # ended: ignored
    ]
    agents = [
        {"id": "alice", "name": "Alice", "team": "A", "state": "on_call", "since": NOW - timedelta(seconds=120)},
        {"id": "bob", "name": "Bob", "team": "A", "state": "ringing",
         "since": (NOW - timedelta(seconds=3)).isoformat()},
        {"id": "carol", "name": "Carol", "team": "B", "state": "available", "since": None, "queues": ["sales"]},
    ]
    snap = live_snapshot(calls, agents, NOW, queues=["support", "sales", "vip"])
    q = {x["name"]: x for x in snap["queues"]}
    assert (q["support"]["waiting"], q["support"]["oldest_wait_s"], q["support"]["in_progress"]) == (2, 75.0, 1)
    assert (q["sales"]["waiting"], q["sales"]["oldest_wait_s"]) == (1, 5.0)
    assert q["vip"]["waiting"] == 0
    # carol serves sales only; the others count in every queue
    assert q["support"]["agents"]["available"] == 0 and q["sales"]["agents"]["available"] == 1
    assert q["support"]["agents"]["on_call"] == 1
    assert snap["totals"] == {"waiting": 3, "oldest_wait_s": 75.0, "in_progress": 1,
                              "agents": {"available": 1, "ringing": 1, "on_call": 1, "wrap_up": 0, "away": 0,
                                         "offline": 0}}
    by_id = {a["id"]: a for a in snap["agents"]}
    assert by_id["alice"]["time_in_state_s"] == 120.0 and by_id["carol"]["time_in_state_s"] is None
    views = {c["call_id"]: c for c in snap["calls"]}
    assert set(views) == {"a", "b", "c", "d"}
    assert views["c"]["duration_s"] == 120.0 and views["c"]["waiting_s"] is None
    assert views["a"]["waiting_s"] == 30.0
    assert snap["type"] == "live" and snap["at"] == NOW.isoformat()


def test_supervisor_live_view_is_scoped_to_their_teams():
    calls = [_call("c", CallState.ANSWERED, "support", 60, 30, agent="alice"),
             _call("x", CallState.ANSWERED, "support", 60, 30, agent="carol"),
             _call("w", CallState.QUEUED, "support", 10)]
    agents = [{"id": "alice", "team": "A", "state": "on_call"}, {"id": "carol", "team": "B", "state": "on_call"}]
    directory = {"alice": {"team": "A"}, "carol": {"team": "B"}}
    snap = scope_live(live_snapshot(calls, agents, NOW), Viewer("supervisor", "sue", frozenset({"A"})), directory)
    assert [a["id"] for a in snap["agents"]] == ["alice"]
    assert {c["call_id"] for c in snap["calls"]} == {"c", "w"}
