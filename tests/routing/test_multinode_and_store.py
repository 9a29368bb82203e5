"""Two routing nodes on one real Redis; decisions and callbacks land in their tables."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from cti.adapters.base import CommandResult, Connect
from cti.clock import ManualClock
from cti.model import CallEvent, EventKind, make_call_id, make_event_id
from cti.routing.acd import Router
from cti.routing.engine import CallIn
from cti.routing.reservations import RedisReservations
from cti.store import tables as t
from tests.routing.helpers import T0, engine, offers, settings
from tests.routing.test_acd import START


def _queued(node: str, pcid: str, clock: ManualClock) -> CallEvent:
    return CallEvent(event_id=make_event_id("pbx", node, pcid), provider="pbx", provider_call_id=pcid,
                     call_id=make_call_id("default", "pbx", pcid), kind=EventKind.QUEUED,
                     occurred_at=clock.now(), queue="support")


@pytest.mark.redis
async def test_two_nodes_never_ring_the_same_agent(redis_url):
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    sent: dict[str, list[Connect]] = {"a": [], "b": []}
    routers = []
    for name, client in zip("ab", clients, strict=True):
        clock = ManualClock(START)

        async def dispatch(provider, cmd, name=name):
            await asyncio.sleep(0)
            sent[name].append(cmd)
            return CommandResult()

        r = Router(settings(), clock=clock, dispatch=dispatch, reservations=RedisReservations(client),
                   node_id=f"node-{name}")
        for agent in ("alice", "bob"):
            await r.set_agent_state(agent, "available")
            await clock.advance(1)
        routers.append((r, clock))
    try:
        # both nodes get a call at the same instant; both would pick alice (idle longest)
        await asyncio.gather(*(r.on_event(_queued(n, f"p-{n}", c)) for n, (r, c) in zip("ab", routers,
                                                                                         strict=True)))
        rung = [cmd.targets[0][0] for cmds in sent.values() for cmd in cmds]
        assert sorted(rung) == ["alice", "bob"], sent
        # the node that lost alice to the other one offered its call to bob, and explains it
        [(loser, name)] = [(r, n) for n, (r, _) in zip("ab", routers, strict=True)
                           if r.engine.agents["alice"].blocked_until > 0]
        decisions = loser.decisions_for(make_call_id("default", "pbx", f"p-{name}"))
        assert [d.chosen for d in decisions] == ["alice", "bob"]
    finally:
        for c in clients:
            await c.aclose()


async def test_decisions_and_callbacks_fit_their_tables(sqlite_url):
    e = engine(available=())
    e.enqueue(CallIn("c1", "support", from_number="+33611111111"), T0)
    cb = e.request_callback("c1", "+33611111111", T0 + 5)
    e.ended("c1", T0 + 6)
    [o] = offers(e.set_agent_state("alice", "available", None, T0 + 30))
    db = create_async_engine(sqlite_url)
    try:
        async with db.begin() as conn:
            await conn.run_sync(lambda c: t.metadata.create_all(c, tables=[t.routing_decisions, t.callbacks]))
            await conn.execute(t.routing_decisions.insert().values(**o.decision.to_row()))
            await conn.execute(t.callbacks.insert().values(**cb.to_row()))
        async with db.connect() as conn:
            row = (await conn.execute(sa.select(t.routing_decisions))).one()._mapping
            assert row["chosen"] == "alice" and row["candidates"][0]["agent"] == "alice"
            assert "alice" in row["reason"]
            cbrow = (await conn.execute(sa.select(t.callbacks))).one()._mapping
            assert cbrow["state"] == "dialing" and cbrow["agent"] == "alice" and cbrow["number"] == "+33611111111"
    finally:
        await db.dispose()
