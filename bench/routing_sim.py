"""Busy-hour simulation of the routing engine: service level, ASA, abandon rate, occupancy per queue.

    .venv/bin/python bench/routing_sim.py            # 500 agents, 20 queues, 30,000 calls in one hour
    .venv/bin/python bench/routing_sim.py --quick    # 100 agents, 5 queues, 3,000 calls
    .venv/bin/python bench/routing_sim.py --calls 38000   # overload: queues back up, overflow kicks in

Talk time is exponential (mean 45 s) plus 5 s wrap-up, so the offered load is
about 420 Erlang on 500 agents (~85% occupancy); callers hang up after an
exponential patience (mean 120 s); agents answer 95% of offers after 1-6 s.
Writes bench/results/routing_sim.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cti.routing.sim import SimParams, Simulation, busy_hour_settings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--agents", type=int)
    ap.add_argument("--queues", type=int)
    ap.add_argument("--calls", type=int)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    agents = args.agents or (100 if args.quick else 500)
    queues = args.queues or (5 if args.quick else 20)
    calls = args.calls or (3_000 if args.quick else 30_000)
    settings = busy_hour_settings(agents, queues)
    params = SimParams(duration_s=3600.0, calls=calls, seed=args.seed)
    sim = Simulation(settings, params)
    t0 = time.perf_counter()
    res = sim.run()
    wall = time.perf_counter() - t0
    rows = res.table()
    hdr = (f"{'queue':<6} {'offered':>7} {'answered':>8} {'SL%':>6} {'ASA s':>6} {'aband%':>7} {'vm':>4} "
           f"{'cb':>4} {'occ%':>6}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['queue']:<6} {r['offered']:>7} {r['answered']:>8} {100 * r['service_level']:>6.1f} "
              f"{r['asa_s']:>6.1f} {100 * r['abandon_rate']:>7.2f} {r['voicemail']:>4} {r['callbacks']:>4} "
              f"{100 * r['occupancy']:>6.1f}")
    offered = sum(r["offered"] for r in rows)
    answered = sum(r["answered"] for r in rows)
    within = sum(q.within_sl for q in res.queues.values())
    aband = sum(q.abandoned for q in res.queues.values())
    wait = sum(q.wait_answered_s for q in res.queues.values())
    speed = params.duration_s / wall
    summary = {
        "agents": agents, "queues": queues, "calls": calls, "offered": offered, "answered": answered,
        "service_level": round(within / offered, 4) if offered else 0.0,
        "asa_s": round(wait / max(1, answered), 2),
        "abandon_rate": round(aband / offered, 4) if offered else 0.0,
        "agent_occupancy": round(res.agent_occupancy, 4),
        "decisions": res.decisions, "wall_s": round(wall, 3), "speed_x_real_time": round(speed, 1),
    }
    print("-" * len(hdr))
    print(f"all    {offered:>7} {answered:>8} {100 * summary['service_level']:>6.1f} {summary['asa_s']:>6.1f} "
          f"{100 * summary['abandon_rate']:>7.2f}   occupancy {100 * res.agent_occupancy:.1f}%")
    print(f"simulated 1 h ({res.decisions} decisions) in {wall:.2f} s wall: {speed:.0f}x real time")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "routing_sim.json").write_text(json.dumps({"summary": summary, "queues": rows}, indent=2))


if __name__ == "__main__":
    main()
