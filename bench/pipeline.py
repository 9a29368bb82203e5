"""Event pipeline throughput: events/s through parse -> bus -> fold -> store, in one process.

Scenarios (the same generated calls, ~7 events each, interleaved as a PBX emits them):
  a) memory bus + fold only (parse, CallFolder)             target >= 20,000 ev/s
  b) memory bus + EventPipeline on SQLite (WAL, file)
  c) Redis Streams + EventPipeline on PostgreSQL (batched)  target >= 5,000 ev/s
The clock runs from the first publish until the consumer group has acknowledged
everything (publishing and consuming run concurrently, as in production). Redis
and PostgreSQL are real servers started by tests/servers.py. Prints a table and
writes bench/results/pipeline.json.

    .venv/bin/python bench/pipeline.py [--quick] [--calls N] [--batch 256]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cti.bus import Bus, Message, open_bus, streams  # noqa: E402
from cti.calls.pipeline import EventPipeline, parse_event  # noqa: E402
from cti.calls.repo import CallRepo, call_from_row  # noqa: E402
from cti.calls.state import CallFolder, fold  # noqa: E402
from cti.store import migrate  # noqa: E402
from cti.store.db import Database  # noqa: E402
from tests.integration.callgen import interleaved, many_calls  # noqa: E402
from tests.servers import postgres_server, redis_server  # noqa: E402


async def _publish(bus: Bus, payloads: list[dict[str, Any]], chunk: int = 500) -> None:
    for i in range(0, len(payloads), chunk):
        await bus.publish_many(streams.EVENTS, payloads[i : i + chunk])


async def _run(bus: Bus, payloads: list[dict[str, Any]], consume) -> tuple[float, float]:
    """Wall and CPU seconds (this process) from the first publish until group 'store' has nothing left."""
    t0 = time.perf_counter()
    c0 = time.process_time()
    task = asyncio.create_task(consume())
    await _publish(bus, payloads)
    while await bus.lag(streams.EVENTS, "store") > 0:  # noqa: ASYNC110 - the lag is what we measure
        await asyncio.sleep(0.02)  # coarse: polling must not cost the measured process much
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return elapsed, cpu


async def fold_only(payloads: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    bus = open_bus("memory://", batch=batch)
    folder = CallFolder()
    calls = 0

    async def handler(msgs: list[Message]) -> None:
        # what EventPipeline does without the store: parse, group by call, fold once per call
        nonlocal calls
        by_call: dict[str, list] = {}
        for m in msgs:
            e = parse_event(m.data)
            by_call.setdefault(e.call_id, []).append(e)
        for evs in by_call.values():
            if folder.add_many(evs) is not None:
                calls += 1

    elapsed, cpu = await _run(bus, payloads, lambda: bus.consume(streams.EVENTS, "store", "bench", handler))
    return {"seconds": elapsed, "cpu_seconds": cpu, "call_updates": calls}


def _server_cpu(pids: list[int]) -> float:
    """CPU seconds used so far by these server processes and their children (psutil)."""
    try:
        import psutil
    except ImportError:  # bench extra not installed: no server CPU column
        return 0.0
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
        except psutil.Error:
            continue
    return total


async def with_store(
    bus: Bus, db_url: str, payloads: list[dict[str, Any]], expected, server_pids: list[int] | None = None
) -> dict[str, Any]:
    await migrate.upgrade_async(db_url)
    db = Database(db_url)
    await db.connect()
    await bus.start()
    try:
        pipe = EventPipeline(bus, db, consumer="bench")
        s0 = _server_cpu(server_pids or [])
        elapsed, cpu = await _run(bus, payloads, pipe.run)
        server_cpu = _server_cpu(server_pids or []) - s0
        # the benchmark is only worth something if the result is right
        repo = CallRepo(db)
        wrong = 0
        for evs in expected[:: max(1, len(expected) // 200)]:
            row = await repo.get_call(evs[0].call_id)
            wrong += row is None or call_from_row(row) != fold(evs)
        return {
            "seconds": elapsed,
            "cpu_seconds": cpu,
            "server_cpu_seconds": server_cpu,
            "batches": pipe.stats.batches,
            "call_updates": pipe.stats.updates_published,
            "checked_wrong": wrong,
        }
    finally:
        await bus.close()
        await db.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run (2,000 calls)")
    ap.add_argument("--calls", type=int, default=None, help="calls to generate (default 10,000)")
    ap.add_argument("--batch", type=int, default=256, help="bus read batch size")
    ap.add_argument("--only", choices=["a", "b", "c"], action="append", help="run only these scenarios")
    args = ap.parse_args()
    n_calls = args.calls or (2_000 if args.quick else 10_000)
    only = set(args.only or ["a", "b", "c"])

    expected = many_calls(n_calls, seed=7)
    events = interleaved(expected, seed=7)
    payloads = [e.to_dict() for e in events]
    n = len(payloads)
    results: list[dict[str, Any]] = []

    def record(name: str, target: float | None, r: dict[str, Any]) -> None:
        rate = n / r["seconds"]
        all_cpu = r["cpu_seconds"] + r.get("server_cpu_seconds", 0.0)
        results.append({"scenario": name, "events": n, "calls": n_calls, "events_per_s": round(rate),
                        "events_per_cpu_s": round(n / r["cpu_seconds"]),
                        "events_per_total_cpu_s": round(n / all_cpu),
                        "target_events_per_s": target, "meets_target": None if target is None else rate >= target,
                        **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}})
        print(f"  {name}: {rate:,.0f} ev/s", flush=True)

    print(f"pipeline bench: {n_calls:,} calls, {n:,} events, batch {args.batch}", flush=True)
    if "a" in only:
        record("a) memory bus + fold", 20_000, asyncio.run(fold_only(payloads, args.batch)))
    if "b" in only:
        with tempfile.TemporaryDirectory() as d:
            url = f"sqlite+aiosqlite:///{d}/bench.db"
            bus = open_bus("memory://", batch=args.batch)
            record("b) memory bus + fold + SQLite", None, asyncio.run(with_store(bus, url, payloads, expected)))
    if "c" in only:
        with redis_server() as rs, postgres_server() as pg:
            url = pg.create_database("bench")
            bus = open_bus(rs.url, batch=args.batch)
            pids = [p.proc.pid for p in (rs, pg) if p.proc is not None]
            record("c) Redis + fold + PostgreSQL", 5_000,
                   asyncio.run(with_store(bus, url, payloads, expected, server_pids=pids)))

    print()
    load = os.getloadavg()[0]
    print(f"{'scenario':32} {'events':>8} {'seconds':>8} {'events/s':>9} {'ev/cpu-s':>9} {'ev/all-cpu-s':>12}"
          f" {'target':>7} {'ok':>3}")
    for r in results:
        target = f"{r['target_events_per_s']:,}" if r["target_events_per_s"] else "-"
        ok = {True: "yes", False: "NO", None: "-"}[r["meets_target"]]
        print(f"{r['scenario']:32} {r['events']:>8,} {r['seconds']:>8.2f} {r['events_per_s']:>9,} "
              f"{r['events_per_cpu_s']:>9,} {r['events_per_total_cpu_s']:>12,} {target:>7} {ok:>3}")
    print(f"(events/s: wall clock, the target's measure. ev/cpu-s: per CPU second of this process;"
          f" ev/all-cpu-s: per CPU second of this process plus redis-server and PostgreSQL."
          f" Both ignore other load on the machine: load average {load:.1f} on {os.cpu_count()} CPUs)")
    out = ROOT / "bench" / "results" / "pipeline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "bench": "pipeline", "calls": n_calls, "events": n, "batch": args.batch,
        "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "load_average_1m": round(load, 2), "results": results,
    }, indent=2))
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
