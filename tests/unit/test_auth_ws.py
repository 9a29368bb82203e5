"""Auth principal rules, origin checks, rate limits and the WebSocket hub's fan-out."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from cti.calls.control import RateLimiter
from cti.model import Role
from cti.web.auth import Principal, TokenRecord, TokenStore, hash_token
from cti.web.ws import Connection, Hub, origin_allowed

NOW = datetime(2026, 3, 2, 9, tzinfo=UTC)
TEAMS = {"alice": "support", "bob": "support", "carl": "sales"}


def P(user: str, role: Role, teams=(), tenant="acme") -> Principal:
    return Principal(user, role, tenant, frozenset(teams), hash_token(user))


@pytest.mark.parametrize(
    ("who", "agent", "tenant", "allowed"),
    [
        (P("alice", Role.AGENT), "alice", "acme", True),
        (P("alice", Role.AGENT), "bob", "acme", False),          # another agent's call
        (P("sam", Role.SUPERVISOR, ["support"]), "bob", "acme", True),
        (P("sam", Role.SUPERVISOR, ["support"]), "carl", "acme", False),  # other team
        (P("root", Role.ADMIN), "carl", "acme", True),
        (P("root", Role.ADMIN), "carl", "other", False),          # no cross-tenant access
        (P("sam", Role.SUPERVISOR, ["support"]), "bob", "other", False),
        (P("alice", Role.AGENT), None, "acme", False),            # unassigned call
    ],
)
def test_call_control_matrix(who: Principal, agent: str | None, tenant: str, allowed: bool) -> None:
    assert who.can_control_call(agent, TEAMS.get(agent or ""), tenant) is allowed


def test_token_store_expiry_and_revocation() -> None:
    p = P("alice", Role.AGENT)
    store = TokenStore([TokenRecord(Principal("alice", Role.AGENT, "acme", frozenset(), hash_token("t1"))),
                        TokenRecord(Principal("bob", Role.AGENT, "acme", frozenset(), hash_token("t2")),
                                    expires_at=NOW - timedelta(seconds=1))])
    assert store.lookup("t1", NOW).user == "alice"
    assert store.lookup("t2", NOW) is None        # expired
    assert store.lookup("nope", NOW) is None and store.lookup(None, NOW) is None
    assert store.revoke(hash_token("t1")) and store.lookup("t1", NOW) is None
    assert p.user == "alice"


@pytest.mark.parametrize(
    ("origin", "allowed", "host", "ok"),
    [
        (None, [], "cti:8080", True),                      # non-browser client
        ("https://crm.example", ["https://crm.example"], "cti:8080", True),
        ("https://evil.example", ["https://crm.example"], "cti:8080", False),
        ("http://cti:8080", [], "cti:8080", True),          # same origin as the page
    ],
)
def test_origin_check(origin, allowed, host, ok) -> None:
    assert origin_allowed(origin, allowed, host) is ok


def test_rate_limiter_window() -> None:
    t = [0.0]
    rl = RateLimiter(2, 60, now=lambda: t[0])
    assert rl.hit("a") == 0 and rl.hit("a") == 0
    assert rl.hit("a") > 0 and rl.hit("b") == 0
    t[0] = 61
    assert rl.hit("a") == 0


class FakeWs:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed: int | None = None


async def test_slow_client_is_dropped_and_others_keep_receiving() -> None:
    hub = Hub(queue_max=4, team_of=TEAMS.get)
    slow = Connection(P("alice", Role.AGENT), FakeWs(), asyncio.Queue(4))  # type: ignore[arg-type]
    fast = Connection(P("bob", Role.AGENT), FakeWs(), asyncio.Queue(4))  # type: ignore[arg-type]
    hub.add(slow)
    hub.add(fast)
    for i in range(10):
        hub.to_agent("acme", "alice", {"type": "x", "i": i})
        hub.to_agent("acme", "bob", {"type": "x", "i": i})
        while not fast.queue.empty():  # the fast client's writer keeps up
            fast.ws.sent.append(fast.queue.get_nowait())  # type: ignore[attr-defined]
    assert slow.dropped and not fast.dropped
    assert len(fast.ws.sent) == 10  # type: ignore[attr-defined]
    # the slow client's queue ends with the close sentinel
    items = [slow.queue.get_nowait() for _ in range(slow.queue.qsize())]
    assert items[-1] is None


async def test_supervisor_sees_team_updates_not_other_teams() -> None:
    hub = Hub(queue_max=10, team_of=TEAMS.get)
    sup = Connection(P("sam", Role.SUPERVISOR, ["support"]), FakeWs(), asyncio.Queue(10))  # type: ignore[arg-type]
    other_tenant = Connection(P("eve", Role.ADMIN, tenant="other"), FakeWs(), asyncio.Queue(10))  # type: ignore[arg-type]
    hub.add(sup)
    hub.add(other_tenant)
    hub.to_agent("acme", "bob", {"type": "call_update"}, watchers=True)
    hub.to_agent("acme", "carl", {"type": "call_update", "who": "carl"}, watchers=True)
    got = [json.loads(sup.queue.get_nowait()) for _ in range(sup.queue.qsize())]
    assert got == [{"type": "call_update"}]
    assert other_tenant.queue.empty()
