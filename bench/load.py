"""Load: N agents on WebSockets, calls arriving at R/s, on 1 and 2 `cti serve` nodes.

Everything is real and out of process: redis-server and PostgreSQL (tests/servers.py),
`cti serve --config` nodes started from the command line. Node A holds the simulated
PBX, which makes customers call the queue at R calls/s (Poisson, fixed seed);
simulated agents pick up after 50-200 ms and talk 2-6 s, so 2,000 agents carry
200 calls/s (~800 busy). The bench process opens one WebSocket per agent (`/ws?token=`),
signs every agent in through the API, and records when each `screen_pop` arrives.

- pop latency: the provider's ringing event time (`call_events.occurred_at` of the
  ringing, stamped by the PBX on the shared wall clock) -> the pop's arrival at that
  agent's socket, for legs that rang inside the measuring window;
- events/s: provider and routing events stored (`call_events`) inside the window;
- CPU (% of one core) and RSS per node over the window (psutil), plus Redis and PostgreSQL;
- memory per connected agent: on an idle node (same config, no PBX), RSS after N sockets
  connected and signed in minus RSS before the first, over N; under load the same delta
  per node is also shown (it includes the calls queued meanwhile, so it is an upper bound).

Two nodes: node A (the PBX) + node B (web only), agents split half and half; both
nodes consume the shared groups (store fold, screen pop), each pushes its own sockets.

Arrivals start with node A, before the agents sign in; the calls queued meanwhile are
routed when they do, so measuring starts `--settle` seconds after the last sign-in.

    .venv/bin/python bench/load.py                 # 2,000 agents, 200 calls/s, 30 s, 1 and 2 nodes
    .venv/bin/python bench/load.py --quick         # 300 agents, 30 calls/s, 8 s
    .venv/bin/python bench/load.py --soak 10       # 10 minutes at moderate load, RSS every 30 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.scale.cluster import (  # noqa: E402
    TENANT,
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
from tests.servers import PostgresServer, free_port, postgres_server, redis_server  # noqa: E402

CONTACTS = 2000
TARGET_P99_MS = 50.0
TARGET_KB_PER_AGENT = 20.0


@dataclass
class Client:
    """The agents' sockets: pop arrival times by (agent, call_id), message counts."""

    pops: dict[tuple[str, str], float] = field(default_factory=dict)
    messages: int = 0
    connected: int = 0
    errors: list[str] = field(default_factory=list)

    async def socket(self, session: aiohttp.ClientSession, base: str, agent: str, ready: asyncio.Event) -> None:
        try:
            # compress=15: offer permessage-deflate as every browser does (the server decides)
            async with session.ws_connect(f"{base}/ws?token={agent_token(agent)}", heartbeat=None,
                                          max_msg_size=0, compress=15) as ws:
                async for msg in ws:
                    now = time.time()
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    self.messages += 1
                    if not ready.is_set():
                        self.connected += 1
                        ready.set()  # the snapshot: connected and subscribed
                        continue
                    if '"screen_pop"' in msg.data:
                        d = json.loads(msg.data)
                        if d.get("type") == "screen_pop" and not d.get("update"):
                            self.pops.setdefault((agent, d["call_id"]), now)
        except (aiohttp.ClientError, OSError) as exc:
            self.errors.append(f"{agent}: {exc!r}")
            ready.set()


class Proc:
    """CPU time and RSS of one process (and its children: PostgreSQL backends)."""

    def __init__(self, name: str, pid: int, children: bool = False) -> None:
        self.name, self.p, self.children = name, psutil.Process(pid), children
        self._t0 = 0.0
        self._cpu0 = 0.0

    def _procs(self) -> list[psutil.Process]:
        return [self.p, *self.p.children(recursive=True)] if self.children else [self.p]

    def cpu_s(self) -> float:
        total = 0.0
        for p in self._procs():
            with contextlib.suppress(psutil.Error):
                c = p.cpu_times()
                total += c.user + c.system
        return total

    def rss(self) -> int:
        total = 0
        for p in self._procs():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def mark(self) -> None:
        self._t0, self._cpu0 = time.monotonic(), self.cpu_s()

    def cpu_pct(self) -> float:
        return 100.0 * (self.cpu_s() - self._cpu0) / max(1e-9, time.monotonic() - self._t0)


@contextlib.contextmanager
def servers() -> Iterator[tuple[Any, PostgresServer]]:
    with redis_server() as r, postgres_server() as pg:
        yield r, pg


def _quantile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=1000, method="inclusive")[int(q * 1000) - 1]


async def _rows_in(engine: Any, start: datetime, end: datetime) -> tuple[list[Any], int]:
    from cti.store import tables as t

    c = t.call_events.c
    async with engine.connect() as conn:
        rings = (await conn.execute(sa.select(c.call_id, c.payload, c.occurred_at)
                                    .where(c.kind == "ringing", c.occurred_at >= start, c.occurred_at < end))).all()
        n = (await conn.execute(sa.select(sa.func.count()).select_from(t.call_events)
                                .where(c.occurred_at >= start, c.occurred_at < end))).scalar_one()
        queued = (await conn.execute(sa.select(sa.func.count()).select_from(t.call_events).where(
            c.kind == "queued", c.occurred_at >= start, c.occurred_at < end))).scalar_one()
    return rings, int(n), int(queued)


def seed_history(pg: PostgresServer, database: str, calls_per_contact: int, agents: int,
                 crm_backlog: bool = False) -> dict[str, Any]:
    """A site that has been taking calls for a while, then ANALYZE, as autovacuum keeps it on a
    running site: `calls_per_contact` past calls per contact over the last 90 days (one call
    record, one activity already pushed to the CRM and five events each; one caller in five
    unknown, with no contact) and 20 closed state spells per agent. `crm_backlog`: none of the
    past activities reached the CRM (the node starts just after a long CRM outage).

    Without it every table starts empty, and PostgreSQL plans for empty tables: the screen
    pop's last calls, the fold's event counts and the close of an agent's open spell ran as
    sequential scans (seen with auto_explain), kept for the whole window while the tables grew."""
    n = CONTACTS * calls_per_contact
    if n <= 0:
        return {"calls": 0}
    t0 = time.monotonic()
    synced = "NULL, NULL, 1" if crm_backlog else "call_id, at + interval '187 s', 1"
    # one set-based statement per table: 100,000 calls take seconds, not minutes of round trips
    past = f"""
        CREATE TEMP TABLE past AS
        SELECT 'past-' || g AS call_id,
               CASE WHEN g % 5 = 0 THEN NULL ELSE 'c' || (g % {CONTACTS}) END AS contact,
               CASE WHEN g % 5 = 0 THEN '+3362' || lpad(g::text, 7, '0')
                    ELSE '+3361' || lpad((g % {CONTACTS})::text, 7, '0') END AS caller,
               now() - (g * interval '90 days' / {n}) AS at,
               'agent' || (g % 97) AS agent
        FROM generate_series(1, {n}) AS g;
        INSERT INTO calls (call_id, tenant, provider, provider_call_id, direction, state, from_number,
                           to_number, queue, agent, outcome, created_at, answered_at, ended_at, ring_s,
                           talk_s, hold_s, wait_s, events, last_event_at, contact_id, priority)
        SELECT call_id, '{TENANT}', 'sim', call_id, 'inbound', 'ended', caller, '+33170000000', 'support',
               agent, 'answered', at, at + interval '5 s', at + interval '185 s', 4, 180, 0, 5, 5,
               at + interval '185 s', contact, 0 FROM past;
        INSERT INTO activities (call_id, tenant, contact_id, agent, subject, direction, from_number,
                                to_number, duration_s, outcome, created_at, updated_at, crm_ref,
                                crm_synced_at, crm_attempts)
        SELECT call_id, '{TENANT}', contact, agent, 'Inbound call', 'inbound', caller, '+33170000000',
               180, 'answered', at, at + interval '186 s', {synced} FROM past;
        INSERT INTO call_events (event_id, call_id, tenant, provider, kind, occurred_at, seq, payload)
        SELECT call_id || '-' || k, call_id, '{TENANT}', 'sim', k, at, 0, '{{}}'::json
        FROM past, unnest(ARRAY['created', 'queued', 'ringing', 'answered', 'ended']) AS k;
        INSERT INTO agent_state_log (event_id, tenant, agent, state, started_at, ended_at)
        SELECT 'past-' || a || '-' || k, '{TENANT}', 'ag' || lpad(a::text, 4, '0'),
               CASE WHEN k % 2 = 0 THEN 'available' ELSE 'away' END,
               now() - (k + 1) * interval '4 hours', now() - k * interval '4 hours'
        FROM generate_series(0, {agents - 1}) AS a, generate_series(1, 20) AS k;
        ANALYZE;
    """
    pg.psql(past, database=database)
    return {"calls": n, "seconds": round(time.monotonic() - t0, 1)}


def _start_profiler(node: Node, duration: float, work: Path) -> tuple[str, Any, Path] | None:
    """py-spy (sampling, out of process: the node runs unchanged) over the window."""
    import shutil
    import subprocess

    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists() or node.proc is None:
        print("--profile: py-spy is not installed (pip install py-spy)", flush=True)
        return None
    raw = work / f"{node.name}.pyspy.txt"
    proc = subprocess.Popen([exe, "record", "-p", str(node.proc.pid), "-d", str(int(duration)), "-r", "50",
                             "-f", "raw", "-o", str(raw), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return node.name, proc, raw


def _finish_profiler(name: str, proc: Any, raw: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares per function, from py-spy's collapsed stacks."""
    from collections import Counter

    proc.wait(timeout=60)
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines() if raw.exists() else []:
        stack, _, n = line.rpartition(" ")
        frames = [f.split(" (")[0] + " (" + f.rsplit("/", 1)[-1] if " (" in f else f for f in stack.split(";")]
        count = int(n)
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    pct = lambda c: round(100.0 * c / max(1, total), 1)  # noqa: E731
    print(f"\nprofile of {name} ({total} samples): top self time", flush=True)
    for f, c in own.most_common(top):
        print(f"  {pct(c):5.1f}%  {f}")
    print(f"profile of {name}: top inclusive time")
    for f, c in incl.most_common(top):
        print(f"  {pct(c):5.1f}%  {f}")
    return {"samples": total, "self": {f: pct(c) for f, c in own.most_common(top)},
            "inclusive": {f: pct(c) for f, c in incl.most_common(top)}, "raw": str(raw)}


async def run_case(*, nodes_n: int, agents: int, rate: float, duration: float, settle: float,
                   work: Path, redis_url: str, pg: PostgresServer, soak_min: float = 0.0,
                   profile: bool = False, trace: bool = False, history: int = 0,
                   crm_backlog: bool = False) -> dict[str, Any]:
    from sqlalchemy.ext.asyncio import create_async_engine

    store_url = pg.create_database(f"load{nodes_n}_{int(time.time())}")
    import redis as redis_sync

    redis_sync.Redis.from_url(redis_url).flushall()
    storage = work / "recordings"
    storage.mkdir(exist_ok=True)
    base = base_settings(store_url=store_url, bus_url=redis_url, agents=agents, storage=storage)
    # callers give up after ~5 s of waiting (exponential mean): those who call before the agents
    # have signed in leave instead of piling up; once agents are in, calls ring within ms
    with_sim = {**base, "providers": [sim_provider(seed=7, rate_per_s=rate, talk_time_s=(2.0, 6.0),
                                                   contacts=CONTACTS, patience_s=5.0)]}
    cfg_a = write_config(work / f"a{nodes_n}.toml", with_sim)
    cfg_b = write_config(work / f"b{nodes_n}.toml", base)
    migrate(cfg_b)
    await seed_contacts(store_url, write_contacts(work / "contacts.csv", CONTACTS))
    seeded = seed_history(pg, store_url.rsplit("/", 1)[1], history, agents, crm_backlog)
    snaps = work / "tracemalloc"
    env_a = {"CTI_TRACEMALLOC_DIR": str(snaps)} if trace else {}
    nodes = [Node("node-a", "serve", cfg_a, work / f"a{nodes_n}.log", port=free_port(), log_level="warning",
                  env=env_a)]
    if nodes_n == 2:
        nodes.append(Node("node-b", "serve", cfg_b, work / f"b{nodes_n}.log", port=free_port(), log_level="warning"))
    ids = agent_ids(agents)
    share = {n.name: ids[i::nodes_n] for i, n in enumerate(nodes)}
    engine = create_async_engine(store_url)
    client = Client()
    out: dict[str, Any] = {"nodes": nodes_n, "agents": agents, "rate_per_s": rate, "history": seeded}
    try:
        for n in reversed(nodes):  # B first: A's arrivals start with it
            n.start()
        for n in nodes:
            await asyncio.to_thread(n.wait_ready, 90)
        procs = {n.name: Proc(n.name, n.proc.pid) for n in nodes if n.proc}
        rss0 = {k: p.rss() for k, p in procs.items()}
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as session:
            tasks = []
            for n in nodes:
                for i in range(0, len(share[n.name]), 100):  # waves: do not measure the accept backlog
                    evs = []
                    for a in share[n.name][i:i + 100]:
                        ev = asyncio.Event()
                        evs.append(ev)
                        tasks.append(asyncio.create_task(client.socket(session, n.base_url, a, ev)))
                    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in evs)), 60)
            for n in nodes:
                await set_available(session, n.base_url, share[n.name])
            await asyncio.sleep(2.0)
            rss1 = {k: p.rss() for k, p in procs.items()}
            out["connected"] = client.connected
            out["connect_errors"] = len(client.errors)
            out["kb_per_agent"] = {k: round((rss1[k] - rss0[k]) / 1024 / max(1, len(share[k])), 2) for k in procs}
            await asyncio.sleep(settle)
            samples: list[tuple[float, dict[str, int]]] = []
            extra = {"redis": Proc("redis", _redis_pid(redis_url)), "postgres": Proc("postgres", _pg_pid(pg), True)}
            for p in (*procs.values(), *extra.values()):
                p.mark()
            load0 = os.getloadavg()[0]
            start = datetime.now(UTC)
            msgs0 = client.messages
            t0 = time.monotonic()
            if soak_min:
                end_at = t0 + soak_min * 60
                async def sample() -> None:
                    values = {k: p.rss() for k, p in procs.items()}
                    for n in nodes:
                        values[f"{n.name}_heap_blocks"] = await _heap_blocks(session, n.base_url)
                    samples.append((time.monotonic() - t0, values))

                while time.monotonic() < end_at:
                    await sample()
                    if trace and nodes[0].proc is not None:
                        nodes[0].proc.send_signal(signal.SIGUSR2)
                    print(f"  soak t={samples[-1][0]:6.0f}s " + ", ".join(
                        f"{k} {_unit(k, v):.1f}" for k, v in samples[-1][1].items()), flush=True)
                    await asyncio.sleep(min(30.0, max(0.0, end_at - time.monotonic())))
                await sample()
            else:
                spies = [_start_profiler(n, duration, work) for n in nodes] if profile else []
                await asyncio.sleep(duration)
                for spy in spies:
                    if spy is not None:
                        out.setdefault("profile", {})[spy[0]] = await asyncio.to_thread(_finish_profiler, *spy)
            elapsed = time.monotonic() - t0
            end = datetime.now(UTC)
            out["cpu_pct"] = {k: round(p.cpu_pct(), 1) for k, p in (*procs.items(), *extra.items())}
            out["rss_mib"] = {k: round(p.rss() / 2**20, 1) for k, p in (*procs.items(), *extra.items())}
            out["loadavg_1m_before"] = round(load0, 2)
            out["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
            out["ws_messages_per_s"] = round((client.messages - msgs0) / elapsed, 1)
            out["bus_lag_end_of_window"] = _bus_lag(redis_url)
            await asyncio.sleep(3.0)  # late pops of the window's last rings, and the store catching up
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        rings, n_events, n_queued = await _rows_in(engine, start, end)
        lat, missing = [], 0
        slow: dict[int, int] = {}  # second of the window -> pops over the target: a stall or steady queueing?
        for r in rings:
            agent = (r.payload or {}).get("agent")
            got = client.pops.get((agent, r.call_id))
            if got is None:
                missing += 1
                continue
            at = r.occurred_at if r.occurred_at.tzinfo else r.occurred_at.replace(tzinfo=UTC)
            lat.append((got - at.timestamp()) * 1000.0)
            if lat[-1] > TARGET_P99_MS:
                second = int((at - start).total_seconds())
                slow[second] = slow.get(second, 0) + 1
        out.update({
            "window_s": round(elapsed, 1), "rings": len(rings), "pops": len(lat), "pops_missing": missing,
            "arrivals_per_s": round(n_queued / elapsed, 1), "calls_per_s": round(len(rings) / elapsed, 1),
            "events_per_s": round(n_events / elapsed, 1),
            "pop_p50_ms": round(_quantile(sorted(lat), 0.5), 1), "pop_p99_ms": round(_quantile(sorted(lat), 0.99), 1),
            "pop_max_ms": round(max(lat), 1) if lat else None,
            "pops_over_target_by_second": dict(sorted(slow.items())),
            "window_start": start.isoformat(),
        })
        if samples:
            out["soak"] = _soak_summary(samples)
        if trace:
            out["tracemalloc"] = _growth(snaps)
        out["node_errors"] = {n.name: sum(1 for line in n.log_text().splitlines() if '"level": "error"' in line)
                              for n in nodes}
        return out
    finally:
        for n in nodes:
            n.stop()
        await engine.dispose()


async def idle_memory(*, agents: int, work: Path, redis_url: str, pg: PostgresServer) -> dict[str, Any]:
    """Memory per connected agent on a node with no calls: RSS before the first socket, and
    after N sockets connected and signed in (the same node config, minus the PBX)."""
    import gc

    import redis as redis_sync

    store_url = pg.create_database(f"idle_{int(time.time())}")
    redis_sync.Redis.from_url(redis_url).flushall()
    base = base_settings(store_url=store_url, bus_url=redis_url, agents=agents, storage=work)
    cfg = write_config(work / "idle.toml", base)
    migrate(cfg)
    node = Node("node-idle", "serve", cfg, work / "idle.log", port=free_port(), log_level="warning")
    client = Client()
    try:
        node.start()
        await asyncio.to_thread(node.wait_ready, 90)
        proc = Proc(node.name, node.proc.pid)  # type: ignore[union-attr]
        await asyncio.sleep(2.0)
        rss0 = proc.rss()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            tasks, evs = [], []
            for a in agent_ids(agents):
                ev = asyncio.Event()
                evs.append(ev)
                tasks.append(asyncio.create_task(client.socket(session, node.base_url, a, ev)))
                if len(evs) % 100 == 0:
                    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in evs)), 60)
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in evs)), 60)
            await set_available(session, node.base_url, agent_ids(agents))
            await asyncio.sleep(3.0)
            rss1 = proc.rss()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        gc.collect()
        return {"agents": agents, "connected": client.connected, "rss_before_mib": round(rss0 / 2**20, 1),
                "rss_after_mib": round(rss1 / 2**20, 1), "kb_per_agent": round((rss1 - rss0) / 1024 / agents, 2)}
    finally:
        node.stop()


def _bus_lag(url: str) -> dict[str, int]:
    """Entries not yet delivered per consumer group of the events stream (who falls behind)."""
    import redis as redis_sync

    r = redis_sync.Redis.from_url(url, decode_responses=True)
    out = {}
    with contextlib.suppress(Exception):
        for g in r.xinfo_groups("events"):
            out[g["name"]] = int(g.get("lag") or 0)
    return out


def _redis_pid(url: str) -> int:
    import redis as redis_sync

    return int(redis_sync.Redis.from_url(url).info("server")["process_id"])


def _pg_pid(pg: PostgresServer) -> int:
    return int((pg.dir / "data" / "postmaster.pid").read_text().split()[0])


def _growth(snaps: Path) -> str:
    """What grew on node A between the snapshot two minutes in (caches full) and the last."""
    from cti.diagnostics import compare

    files = sorted(snaps.glob("*.snap"), key=lambda p: int(p.stem.split("-")[1]))
    if len(files) < 3:
        return "fewer than three snapshots"
    report = compare(str(files[min(4, len(files) - 2)]), str(files[-1]))
    print("growth on node-a (tracemalloc, 2 min in -> end):\n" + report, flush=True)
    return report


async def _heap_blocks(session: aiohttp.ClientSession, base_url: str) -> int:
    """The node's live Python memory blocks (`cti_python_heap_blocks` on /metrics); -1 if unread."""
    try:
        async with session.get(f"{base_url}/metrics") as r:
            for line in (await r.text()).splitlines():
                if line.startswith("cti_python_heap_blocks "):
                    return int(float(line.split()[1]))
    except (aiohttp.ClientError, ValueError):
        pass
    return -1


def _unit(key: str, value: int) -> float:
    """RSS in MiB; Python heap blocks in thousands."""
    return value / 1000 if key.endswith("_heap_blocks") else value / 2**20


def _soak_summary(samples: list[tuple[float, dict[str, int]]]) -> dict[str, Any]:
    """Least-squares slope per node of RSS (MiB/min) and of live Python blocks (thousands/min),
    skipping the first sample (warm-up)."""
    res: dict[str, Any] = {"samples": [{"t_s": round(t, 1), **{k: round(_unit(k, v), 2) for k, v in r.items()}}
                                       for t, r in samples]}
    use = samples[1:] if len(samples) > 2 else samples
    # the second half apart: bounded caches (seen event ids, recent decisions) fill first, then plateau
    for label, part in (("", use), ("_second_half", use[len(use) // 2:])):
        for k in samples[0][1]:
            xs = [t / 60 for t, _ in part]
            ys = [_unit(k, r[k]) for _, r in part]
            if len(xs) >= 2 and max(xs) > min(xs):
                mx, my = statistics.fmean(xs), statistics.fmean(ys)
                slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
                unit = "kblocks" if k.endswith("_heap_blocks") else "mib"
                res[f"{k}_slope_{unit}_per_min{label}"] = round(slope, 3)
    return res


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'nodes':>5}{'agents':>7}{'arr/s':>7}{'rung/s':>8}{'ev/s':>8}{'ws msg/s':>10}{'rings':>7}{'miss':>6}"
          f"{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}  per node: CPU % (of one core), RSS MiB, KB/agent under load")
    for r in rows:
        if "error" in r:
            print(f"{r['nodes']:>5}{r['agents']:>7}  failed: {r['error'][:100]}")
            continue
        per = "; ".join(f"{k} {r['cpu_pct'][k]:.0f}% {r['rss_mib'][k]:.0f} MiB {r['kb_per_agent'][k]:.1f} KB"
                        for k in r["kb_per_agent"])
        others = ", ".join(f"{k} {r['cpu_pct'][k]:.0f}%" for k in ("redis", "postgres"))
        print(f"{r['nodes']:>5}{r['agents']:>7}{r['arrivals_per_s']:>7.1f}{r['calls_per_s']:>8.1f}{r['events_per_s']:>8.0f}"
              f"{r['ws_messages_per_s']:>10.0f}{r['rings']:>7}{r['pops_missing']:>6}{r['pop_p50_ms']:>8.1f}"
              f"{r['pop_p99_ms']:>8.1f}{(r['pop_max_ms'] or 0):>8.1f}  {per}; {others}")


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="300 agents, 30 calls/s, 8 s")
    ap.add_argument("--agents", type=int)
    ap.add_argument("--rate", type=float, help="new calls per second")
    ap.add_argument("--duration", type=float, help="measuring window, seconds")
    ap.add_argument("--settle", type=float, help="seconds between the last sign-in and the window")
    ap.add_argument("--nodes", default="1,2", help="which cases: 1, 2 or 1,2")
    ap.add_argument("--soak", type=float, metavar="MINUTES", help="one node, moderate load, RSS every 30 s")
    ap.add_argument("--profile", action="store_true", help="sample each node with py-spy over the window")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="soak only: trace node A's allocations and print what grew (slows the node)")
    ap.add_argument("--skip-idle", action="store_true", help="skip the idle-node memory measurement")
    ap.add_argument("--history", type=int, default=50, metavar="CALLS",
                    help="past calls per contact in the store before the run (50: 100,000 calls, 500,000 "
                         "events); 0 starts from an empty store")
    ap.add_argument("--crm-backlog", action="store_true",
                    help="none of that history reached the CRM yet: the node works off the backlog meanwhile")
    args = ap.parse_args()
    soak = args.soak or 0.0
    if soak:
        agents, rate, duration, cases = args.agents or 500, args.rate or 20.0, 0.0, [1]
    elif args.quick:
        agents, rate, duration = args.agents or 300, args.rate or 30.0, args.duration or 8.0
        cases = [int(x) for x in args.nodes.split(",")]
    else:
        agents, rate, duration = args.agents or 2000, args.rate or 200.0, args.duration or 30.0
        cases = [int(x) for x in args.nodes.split(",")]
    settle = args.settle if args.settle is not None else (5.0 if args.quick else 10.0)
    load_before = os.getloadavg()
    rows = []
    idle: dict[str, Any] = {}
    tmp = tempfile.mkdtemp(prefix="cti-load-")  # kept: the nodes' logs are in it
    with servers() as (r, pg):
        if not soak and not args.skip_idle:
            print(f"memory per connected agent: {agents} agents on an idle node", flush=True)
            idle = asyncio.run(idle_memory(agents=agents, work=Path(tmp), redis_url=r.url, pg=pg))
        for n in cases:
            work = Path(tmp) / f"n{n}"
            work.mkdir()
            print(f"running {n} node(s): {agents} agents, {rate:g} calls/s, "
                  + (f"soak {soak:g} min" if soak else f"{duration:g} s"), flush=True)
            try:
                rows.append(asyncio.run(run_case(nodes_n=n, agents=agents, rate=rate, duration=duration,
                                                 settle=settle, work=work, redis_url=r.url, pg=pg, soak_min=soak,
                                                 profile=args.profile, trace=args.tracemalloc and bool(soak),
                                                 history=args.history, crm_backlog=args.crm_backlog)))
            except Exception as exc:  # one case failing still reports the others
                print(f"  {n} node(s) failed: {exc!r}", flush=True)
                rows.append({"nodes": n, "agents": agents, "rate_per_s": rate, "error": repr(exc)[:500]})
            print(json.dumps(rows[-1], default=str), flush=True)
    print_table(rows)
    for x in rows:
        if x.get("bus_lag_end_of_window"):
            print(f"bus lag at the end of the window ({x['nodes']} node(s)): {x['bus_lag_end_of_window']}")
        if x.get("pops_over_target_by_second"):
            print(f"pops over {TARGET_P99_MS:g} ms by second of the window ({x['nodes']} node(s)): "
                  f"{x['pops_over_target_by_second']}")
    print(f"node logs: {tmp}")
    if idle:
        print(f"\nidle node, {idle['connected']} agents connected and signed in: RSS {idle['rss_before_mib']} -> "
              f"{idle['rss_after_mib']} MiB = {idle['kb_per_agent']} KB per connected agent")
    one = next((x for x in rows if x["nodes"] == 1 and "error" not in x), None)
    verdict: dict[str, Any] = {}
    if one is not None and not soak:
        verdict = {"pop_p99_le_50ms": one["pop_p99_ms"] <= TARGET_P99_MS,
                   "kb_per_agent_le_20": idle.get("kb_per_agent", 1e9) <= TARGET_KB_PER_AGENT,
                   "rate_reached": one["calls_per_s"] >= 0.95 * rate}
        print(f"\ntargets on one node ({agents} agents, {rate:g} calls/s): pop p99 <= {TARGET_P99_MS:g} ms "
              f"{'OK' if verdict['pop_p99_le_50ms'] else 'MISSED'}; <= {TARGET_KB_PER_AGENT:g} KB/agent "
              f"{'OK' if verdict['kb_per_agent_le_20'] else 'MISSED'}; rate reached "
              f"{'OK' if verdict['rate_reached'] else 'MISSED'}")
    for x in rows:
        if "soak" in x:
            print("soak slopes after the first sample (RSS in MiB/min, Python heap in thousand blocks/min): "
                  + ", ".join(f"{k}: {v}" for k, v in x["soak"].items() if "_slope_" in k))
    print(f"machine: {os.cpu_count()} CPUs, load average before {load_before[0]:.2f} (shared with other work); "
          "bench client, nodes, Redis and PostgreSQL all on it")
    name = "load_soak.json" if soak else "load.json"
    path = ROOT / "bench" / "results" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"agents": agents, "rate_per_s": rate, "duration_s": duration, "soak_min": soak,
                                "cpus": os.cpu_count(), "loadavg_before": load_before[0], "rows": rows,
                                "idle_memory": idle,
                                "targets": verdict}, indent=2, default=str))
    print(f"written {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
