"""Routing decision time (p50/p99) with 10,000 agents and 100 skills, and busy-hour simulation speed.

    .venv/bin/python bench/routing.py            # 10,000 agents, 100 skills, 100 queues
    .venv/bin/python bench/routing.py --quick    # 2,000 agents, 50 skills, 20 queues

Times are the thread's CPU time (time.thread_time_ns: a busy shared machine's preemption
excluded); wall-clock percentiles are printed too. A "decision" is one engine call that ends in
an offer: a call arriving while agents are free (pick the agent: pop from the queue's strategy heap) or an
agent freeing while calls wait (pick the call: heads of the agent's queues).
Targets: p99 <= 1 ms per decision; the busy hour (500 agents, 20 queues,
30,000 calls) simulated >= 100x faster than real time.
Writes bench/results/routing.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cti.config import Settings  # noqa: E402
from cti.routing.engine import CallIn, Engine, Offer  # noqa: E402
from cti.routing.queues import compile_routing  # noqa: E402
from cti.routing.sim import SimParams, Simulation, busy_hour_settings  # noqa: E402

T0 = 1_767_603_600.0  # Monday 09:00 UTC
STRATS = ["longest_idle", "fewest_calls", "round_robin", "best_skill", "linear"]


def centre(agents: int, skills: int, queues: int, seed: int = 3) -> Settings:
    rng = random.Random(seed)
    names = [f"sk{i}" for i in range(skills)]
    rows = [{"id": f"a{i}", "name": f"A{i}", "skills": {s: rng.randint(1, 10) for s in rng.sample(names, 5)},
             "endpoints": {"pbx": f"PJSIP/a{i}"}} for i in range(agents)]
    qs = [{"name": f"q{i}", "requires": f"{names[i % skills]} >= 3 or ({names[(i * 7 + 1) % skills]} >= 6 "
                                        f"and {names[(i * 13 + 2) % skills]} >= 2)",
           "strategy": STRATS[i % len(STRATS)], "overflow": {"after_s": 60, "widen": f"{names[i % skills]} >= 1"}}
          for i in range(queues)]
    return Settings.model_validate({"agents": rows, "queues": qs, "priority_rules": [
        {"name": "vip", "when": "account.won_amount_24m >= 50000 or contact.role in ['CEO', 'CFO']", "boost": 50}]})


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def bench_decisions(agents: int, skills: int, queues: int, ops: int, seed: int = 5) -> dict[str, float]:
    rng = random.Random(seed)
    s = centre(agents, skills, queues)
    t = time.perf_counter()
    cfg = compile_routing(s)
    e = Engine(cfg)
    build_s = time.perf_counter() - t
    now = T0
    for a in s.agents:
        e.set_agent_state(a.id, "available", None, now)
        now += 0.001
    qnames = [q.name for q in s.queues]
    arrive: list[float] = []
    free: list[float] = []
    wall: list[float] = []
    connected: list[str] = []
    n = 0

    def answer_all(actions: list) -> None:
        for act in actions:
            if isinstance(act, Offer):
                e.answered(act.call_id, act.targets[0][0], now)
                connected.append(act.call_id)

    # fill to ~95% busy, then churn: arrivals and hang-ups at random, backlog forms and drains
    target_busy = int(agents * 0.95)
    for i in range(ops):
        now += 0.01
        waiting = len(e.items) - len(connected)
        if waiting < 300 and (len(connected) < target_busy or rng.random() < 0.5):
            n += 1
            contact = {"account.won_amount_24m": 60_000} if rng.random() < 0.05 else None
            call = CallIn(f"c{n}", rng.choice(qnames), provider="pbx", provider_call_id=f"p{n}", contact=contact)
            w, t = time.perf_counter_ns(), time.thread_time_ns()
            acts = e.enqueue(call, now)
            dt, dw = (time.thread_time_ns() - t) / 1e6, (time.perf_counter_ns() - w) / 1e6
            if any(isinstance(a, Offer) for a in acts):
                arrive.append(dt)
                wall.append(dw)
            answer_all(acts)
        elif connected:
            k = rng.randrange(len(connected))
            connected[k], connected[-1] = connected[-1], connected[k]
            cid = connected.pop()
            w, t = time.perf_counter_ns(), time.thread_time_ns()
            acts = e.ended(cid, now)
            dt, dw = (time.thread_time_ns() - t) / 1e6, (time.perf_counter_ns() - w) / 1e6
            if any(isinstance(a, Offer) for a in acts):
                free.append(dt)
                wall.append(dw)
            answer_all(acts)
        if i % 1000 == 0:
            e.advance(now)
    t = time.perf_counter()
    e.reconfigure(compile_routing(s))
    reconf_s = time.perf_counter() - t
    both = arrive + free
    return {
        "agents": agents, "skills": skills, "queues": queues, "decisions": len(both),
        "p50_ms": round(statistics.median(both), 4), "p99_ms": round(pct(both, 99), 4),
        "max_ms": round(max(both), 4),
        "wall_p50_ms": round(statistics.median(wall), 4), "wall_p99_ms": round(pct(wall, 99), 4),
        "arrival_p50_ms": round(statistics.median(arrive), 4) if arrive else 0.0,
        "arrival_p99_ms": round(pct(arrive, 99), 4) if arrive else 0.0,
        "agent_free_p50_ms": round(statistics.median(free), 4) if free else 0.0,
        "agent_free_p99_ms": round(pct(free, 99), 4) if free else 0.0,
        "waiting_at_end": sum(v["waiting"] for v in e.snapshot(now)["queues"]),
        "build_s": round(build_s, 3), "reconfigure_s": round(reconf_s, 3),
    }


def bench_sim(agents: int, queues: int, calls: int) -> dict[str, float]:
    sim = Simulation(busy_hour_settings(agents, queues), SimParams(calls=calls))
    t = time.perf_counter()
    res = sim.run()
    wall = time.perf_counter() - t
    return {"agents": agents, "queues": queues, "calls": calls, "decisions": res.decisions,
            "wall_s": round(wall, 3), "speed_x_real_time": round(3600.0 / wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        dec = bench_decisions(2_000, 50, 20, 20_000)
        sim = bench_sim(100, 5, 3_000)
    else:
        dec = bench_decisions(10_000, 100, 100, 60_000)
        sim = bench_sim(500, 20, 30_000)
    print(f"decision time, {dec['agents']} agents / {dec['skills']} skills / {dec['queues']} queues "
          f"({dec['decisions']} decisions)")
    print(f"  {'':<22}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"  {'all decisions':<22}{dec['p50_ms']:>10.4f}{dec['p99_ms']:>10.4f}   max {dec['max_ms']:.3f} ms")
    print(f"  {'call arrives':<22}{dec['arrival_p50_ms']:>10.4f}{dec['arrival_p99_ms']:>10.4f}")
    print(f"  {'agent frees':<22}{dec['agent_free_p50_ms']:>10.4f}{dec['agent_free_p99_ms']:>10.4f}")
    print(f"  {'wall clock (all)':<22}{dec['wall_p50_ms']:>10.4f}{dec['wall_p99_ms']:>10.4f}"
          "   (includes preemption by other processes)")
    print(f"  build (compile + index) {dec['build_s']:.2f} s, reconfigure {dec['reconfigure_s']:.2f} s")
    print(f"busy hour: {sim['agents']} agents, {sim['queues']} queues, {sim['calls']} calls: "
          f"{sim['wall_s']:.2f} s wall = {sim['speed_x_real_time']:.0f}x real time")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "routing.json").write_text(json.dumps({"decisions": dec, "simulation": sim}, indent=2))


if __name__ == "__main__":
    main()
