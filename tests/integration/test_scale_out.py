"""Scale-out: two `cti serve` nodes and two `cti worker`s on one Redis and one PostgreSQL.

Real processes on loopback, started from the command line with their own TOML files:

- node A: `cti serve` with the simulated PBX ("sim"): customers call the queue at a fixed
  seed and rate (Poisson arrivals, the simulator's own), simulated agents pick up, calls
  are recorded. No test hook: node A runs exactly as an operator would run it.
- node B: `cti serve` with no provider (web, API and WebSockets only). Two nodes sharing
  one simulator config would each run their own simulated PBX, so B has none.
- workers W1, W2: `cti worker` with transcription on (gateways leave it to them).

Agents connect their WebSockets to node B and sign in through node B's API; node A's
router routes (it holds the provider), reservations in Redis. Checked afterwards, from
the store and the logs: every agent on B got the screen pop of each call that rang them
at A; no agent ever had two overlapping legs (capacity 1); every recorded call has one
transcript, made once, and both workers made some.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import soundfile as sf
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

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(150)]

DATA = Path(__file__).resolve().parents[1] / "data" / "calls"
AGENTS = 5
CONTACTS = 50
RATE_PER_S = 2.0        # arrivals at node A; talk 1.5-3.5 s: 5 agents are saturated, calls queue
RUN_S = 14.0


def _clip(src: Path, dest: Path, seconds: float) -> str:
    data, sr = sf.read(str(src), always_2d=True)
    sf.write(str(dest), data[: int(seconds * sr)], sr, subtype="PCM_16")
    return str(dest)


async def _agent_socket(session: aiohttp.ClientSession, base: str, agent: str,
                        pops: dict[str, list[dict[str, Any]]], ready: asyncio.Event) -> None:
    async with session.ws_connect(f"{base}/ws?token={agent_token(agent)}", heartbeat=None) as ws:
        first = json.loads((await ws.receive()).data)
        assert first["type"] == "snapshot", first
        ready.set()
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            d = json.loads(msg.data)
            if d.get("type") == "screen_pop" and not d.get("update"):
                pops[agent].append(d)


def _legs(rows: list[Any]) -> dict[str, list[tuple[datetime, datetime, str]]]:
    """(agent) -> [(rang, released, call_id)] from the stored provider events.

    A leg starts when the call rings the agent and ends at its no-answer for that
    agent or at the call's end; a leg still open at the end runs to datetime.max.
    """
    by_call: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        by_call[r.call_id].append(r)
    legs: dict[str, list[tuple[datetime, datetime, str]]] = defaultdict(list)
    for call_id, evs in by_call.items():
        evs.sort(key=lambda r: (r.occurred_at, r.seq))
        open_: dict[str, datetime] = {}
        for r in evs:
            agent = (r.payload or {}).get("agent")
            if r.kind == "ringing" and agent and agent not in open_:
                open_[agent] = r.occurred_at
            elif r.kind == "no_answer" and agent in open_:
                legs[agent].append((open_.pop(agent), r.occurred_at, call_id))
            elif r.kind == "ended":
                for a, start in open_.items():
                    legs[a].append((start, r.occurred_at, call_id))
                open_.clear()
        for a, start in open_.items():
            legs[a].append((start, datetime.max.replace(tzinfo=start.tzinfo), call_id))
    return legs


async def _store_rows(engine: Any) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    from cti.store import tables as t

    async with engine.connect() as conn:
        events = (await conn.execute(sa.select(t.call_events))).all()
        calls = (await conn.execute(sa.select(t.calls))).all()
        recordings = (await conn.execute(sa.select(t.recordings))).all()
        transcripts = (await conn.execute(sa.select(t.transcripts))).all()
    return events, calls, recordings, transcripts


async def _count_done(engine: Any) -> tuple[int, int]:
    from cti.store import tables as t

    async with engine.connect() as conn:
        recs = (await conn.execute(sa.select(sa.func.count(sa.distinct(t.recordings.c.call_id))))).scalar_one()
        done = (await conn.execute(sa.select(sa.func.count()).select_from(t.transcripts)
                                   .where(t.transcripts.c.status == "done"))).scalar_one()
    return int(recs), int(done)


async def test_two_nodes_two_workers(tmp_path: Path, redis_url: str, pg_url: str) -> None:
    storage = tmp_path / "recordings"
    storage.mkdir()
    clips = [_clip(DATA / "c01_billing_dispute.stereo.wav", tmp_path / "r1.wav", 3.0),
             _clip(DATA / "c02_delivery_delay.stereo.wav", tmp_path / "r2.wav", 3.0)]
    base = base_settings(store_url=pg_url, bus_url=redis_url, agents=AGENTS, storage=storage, transcribe=True)
    with_sim = {**base, "providers": [sim_provider(seed=11, rate_per_s=RATE_PER_S, talk_time_s=(1.5, 3.5),
                                                   contacts=CONTACTS, record=True, recording_files=clips)]}
    cfg_a = write_config(tmp_path / "a.toml", with_sim)
    cfg_b = write_config(tmp_path / "b.toml", base)
    migrate(cfg_b)  # once, for every node
    await seed_contacts(pg_url, write_contacts(tmp_path / "contacts.csv", CONTACTS))

    port_a, port_b = free_port(), free_port()
    node_b = Node("node-b", "serve", cfg_b, tmp_path / "b.log", port=port_b)
    # batch 1: a worker takes one job at a time, so an idle worker gets the next one
    workers = [Node(f"worker-{i}", "worker", cfg_b, tmp_path / f"w{i}.log", env={"CTI_BUS__BATCH": "1"})
               for i in (1, 2)]
    node_a = Node("node-a", "serve", cfg_a, tmp_path / "a.log", port=port_a)
    nodes = [node_b, *workers]
    engine = create_async_engine(pg_url)
    try:
        for n in nodes:
            n.start()
        node_b.wait_ready()
        for w in workers:
            w.wait_log("transcription_worker_started")
        agents = agent_ids(AGENTS)
        pops: dict[str, list[dict[str, Any]]] = defaultdict(list)
        async with aiohttp.ClientSession() as session:
            ready = [asyncio.Event() for _ in agents]
            sockets = [asyncio.create_task(_agent_socket(session, node_b.base_url, a, pops, ev))
                       for a, ev in zip(agents, ready, strict=True)]
            await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in ready)), 20)
            await set_available(session, node_b.base_url, agents)
            # node A starts last: its calls queue at once, its router learns B's sign-ins from the bus
            nodes.append(node_a.start())
            await asyncio.to_thread(node_a.wait_ready)
            await asyncio.sleep(RUN_S)
            node_a.stop()  # no more arrivals; calls in flight are cut
            # node B folds and pops what is still on the bus: wait until every stored ring popped
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                rung = {(a, cid) for a, ls in _legs((await _store_rows(engine))[0]).items() for _, _, cid in ls}
                if rung and rung <= {(a, p["call_id"]) for a, ps in pops.items() for p in ps}:
                    break
                await asyncio.sleep(0.5)
            for s in sockets:
                s.cancel()
            await asyncio.gather(*sockets, return_exceptions=True)

        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            recs, done = await _count_done(engine)
            if recs and done >= recs:
                break
            await asyncio.sleep(0.5)
        events, calls, recordings, transcripts = await _store_rows(engine)
    finally:
        for n in nodes:
            n.stop()
        await engine.dispose()

    print(f"\nscale-out: {len(calls)} calls, pops on node B {sum(map(len, pops.values()))}, "
          f"recordings {len({r.call_id for r in recordings})}, transcripts {len(transcripts)}")
    # -- screen pops: calls that arrived at A popped on agents connected to B
    legs = _legs(events)
    rung = {(a, cid) for a, ls in legs.items() for _, _, cid in ls}
    popped = {(a, p["call_id"]) for a, ps in pops.items() for p in ps}
    assert len(rung) >= 10, f"only {len(rung)} legs rang: {len(calls)} calls"
    assert not (rung - popped), f"rang at node A but no pop on node B: {sorted(rung - popped)[:5]}"
    assert popped <= rung, f"pops for calls that never rang the agent: {sorted(popped - rung)[:5]}"
    assert len({a for a, _ in popped}) >= 3, "the pops went to several agents"
    assert any(p.get("contact") for ps in pops.values() for p in ps), "pops carry the CRM match"

    # -- routing: never two calls at once for one agent (capacity 1)
    for agent, ls in legs.items():
        ls.sort()
        for (_s1, e1, c1), (s2, _e2, c2) in itertools.pairwise(ls):
            assert s2 >= e1, f"{agent} double-booked: {c1} until {e1} and {c2} from {s2}"
    assert any((c.wait_s or 0) > 0.5 for c in calls), "calls waited for busy agents (contention)"

    # -- transcription: each recorded call transcribed once, by both workers between them
    recorded = {r.call_id for r in recordings}
    assert len(recorded) >= 4, f"only {len(recorded)} recordings"
    assert {t.call_id for t in transcripts} == recorded
    assert all(t.status == "done" for t in transcripts), [(t.call_id, t.status, t.error) for t in transcripts]
    done_by = {w.name: [e["call_id"] for e in w.log_events("transcription_done")] for w in workers}
    all_done = [cid for ids in done_by.values() for cid in ids]
    assert sorted(all_done) == sorted(recorded), f"each job exactly once: {done_by}"
    print(f"transcripts per worker: { {w: len(ids) for w, ids in done_by.items()} }")
    assert all(done_by.values()), f"both workers transcribed: {done_by}"
