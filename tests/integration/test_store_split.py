"""A gateway that leaves the store to a worker: `server.store_writers = false` + `cti worker --store`.

Real processes on one Redis and one PostgreSQL. The gateway runs the simulated PBX and
the agents' sockets; it routes and pops, and nothing else. The worker folds the events,
writes the calls, their activities, the stats and the agent log. Checked: the pops and
the call updates still reach the agents (the updates now come back through Redis from
the worker), every stored call is the fold of its stored events, each ended call has
exactly one activity, and the logs say who ran which consumer.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.integration.scale.cluster import (
    Node,
    agent_ids,
    agent_token,
    base_settings,
    migrate,
    seed_contacts,
    set_available,
    sim_provider,
    write_config,
    write_contacts,
)
from tests.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(120)]

AGENTS = 4
CONTACTS = 20


async def _socket(session: aiohttp.ClientSession, base: str, agent: str, seen: dict[str, list[dict[str, Any]]],
                  ready: asyncio.Event) -> None:
    async with session.ws_connect(f"{base}/ws?token={agent_token(agent)}", heartbeat=None) as ws:
        ready.set()
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            seen[agent].append(json.loads(msg.data))


async def test_the_store_writers_run_in_a_worker_and_nothing_is_lost(
    tmp_path: Path, redis_url: str, pg_url: str
) -> None:
    from cti.calls.state import fold
    from cti.model import CallEvent
    from cti.store import tables as t

    base = base_settings(store_url=pg_url, bus_url=redis_url, agents=AGENTS, storage=tmp_path)
    gateway_cfg = {**base, "server": {**base["server"], "store_writers": False},
                   "providers": [sim_provider(seed=5, rate_per_s=2.0, talk_time_s=(0.5, 1.5), contacts=CONTACTS)]}
    cfg_gw = write_config(tmp_path / "gateway.toml", gateway_cfg)
    cfg_store = write_config(tmp_path / "store.toml", base)
    migrate(cfg_store)
    await seed_contacts(pg_url, write_contacts(tmp_path / "contacts.csv", CONTACTS))
    gateway = Node("gateway", "serve", cfg_gw, tmp_path / "gw.log", port=free_port())
    store = Node("store-1", "worker", cfg_store, tmp_path / "store.log", args=["--store"])
    engine = create_async_engine(pg_url)
    seen: dict[str, list[dict[str, Any]]] = defaultdict(list)
    try:
        store.start().wait_log("pipeline_started")
        gateway.start().wait_ready()
        agents = agent_ids(AGENTS)
        async with aiohttp.ClientSession() as session:
            ready = [asyncio.Event() for _ in agents]
            sockets = [asyncio.create_task(_socket(session, gateway.base_url, a, seen, ev))
                       for a, ev in zip(agents, ready, strict=True)]
            await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in ready)), 20)
            await set_available(session, gateway.base_url, agents)
            await asyncio.sleep(6.0)
            gateway.stop()  # arrivals stop; the worker still has the bus to drain
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                async with engine.connect() as conn:
                    n_events = (await conn.execute(sa.select(sa.func.count()).select_from(t.call_events)))\
                        .scalar_one()
                    folded = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(t.calls.c.events), 0))))\
                        .scalar_one()
                    ended = (await conn.execute(sa.select(sa.func.count()).select_from(t.calls)
                                                .where(t.calls.c.state == "ended"))).scalar_one()
                    acts = (await conn.execute(sa.select(sa.func.count()).select_from(t.activities))).scalar_one()
                if n_events and folded == n_events and acts == ended:
                    break
                await asyncio.sleep(0.3)
            for s in sockets:
                s.cancel()
            await asyncio.gather(*sockets, return_exceptions=True)
        async with engine.connect() as conn:
            events = (await conn.execute(sa.select(t.call_events))).all()
            calls = (await conn.execute(sa.select(t.calls))).all()
            activities = (await conn.execute(sa.select(t.activities))).all()
            stats_rows = (await conn.execute(sa.select(sa.func.count()).select_from(t.stats_hourly))).scalar_one()
    finally:
        gateway.stop()
        store.stop()
        await engine.dispose()

    # both processes run on uvloop (server.event_loop = "auto" with uvloop installed)
    assert {e["event_loop"] for n in (gateway, store) for e in n.log_events("app_starting")} == {"uvloop"}
    # who ran what: the gateway wrote nothing, the worker did
    assert not gateway.log_events("pipeline_started"), "the gateway must not fold events"
    assert store.log_events("pipeline_started")
    # every stored call is the fold of its stored events
    by_call: dict[str, list[Any]] = defaultdict(list)
    for e in events:
        by_call[e.call_id].append(e)
    ended = [c for c in calls if c.state == "ended"]
    assert len(ended) >= 5, f"only {len(ended)} calls ended"
    assert {c.call_id for c in calls} == set(by_call)
    for c in calls:
        record = fold(CallEvent.from_dict({**(e.payload or {}), "event_id": e.event_id}) for e in by_call[c.call_id])
        assert record is not None and (c.state, c.events) == (str(record.state), record.events), c.call_id
    # one activity per ended call, stats rolled up
    assert sorted(a.call_id for a in activities) == sorted(c.call_id for c in ended)
    assert stats_rows > 0
    # the agents saw their pops (gateway) and their calls' updates (folded by the worker)
    pops = [m for ms in seen.values() for m in ms if m.get("type") == "screen_pop"]
    updates = [m for ms in seen.values() for m in ms if m.get("type") == "call_update"]
    assert pops and any(u["call"]["state"] == "ended" for u in updates), (len(pops), len(updates))
