"""Invariants under random load: hypothesis drives the pure engine and small discrete-event simulations.

- no agent is ever beyond capacity, and an agent's state matches its calls;
- no call waits while an agent who may take it is free;
- FIFO within the same priority (checked at every offer);
- widening and overflow happen at their configured times; callbacks keep their place.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cti.config import Settings
from cti.routing.engine import CallIn, Engine
from cti.routing.queues import compile_routing
from cti.routing.sim import SimParams, Simulation, invariant_violations
from tests.routing.helpers import T0

STRATS = ["longest_idle", "fewest_calls", "round_robin", "ring_all", "linear", "best_skill"]


@st.composite
def centres(draw):
    n_agents = draw(st.integers(1, 8))
    n_queues = draw(st.integers(1, 3))
    skills = ["x", "y", "z"]
    agents = []
    for i in range(n_agents):
        names = skills if i == 0 else draw(st.lists(st.sampled_from(skills), min_size=1, max_size=3, unique=True))
        sk = {s: draw(st.integers(0, 10)) for s in names}
        agents.append({"id": f"a{i}", "name": f"A{i}", "skills": sk, "capacity": draw(st.sampled_from([1, 1, 2])),
                       "endpoints": {"sim": f"SIP/a{i}"}})
    queues = []
    for i in range(n_queues):
        s = skills[i % 3]
        ov = draw(st.sampled_from([None, {"after_s": 30, "widen": f"{s} >= 0", "then": "callback"},
                                   {"after_s": 40, "then": "voicemail"},
                                   {"after_s": 25, "then": f"queue:q{(i + 1) % n_queues}"}]))
        if ov and ov["then"] == f"queue:q{i}":
            ov = None
        queues.append({"name": f"q{i}", "requires": f"{s} >= {draw(st.integers(0, 6))}",
                       "strategy": draw(st.sampled_from(STRATS)), "ring_timeout_s": 8, "max_wait_s": 60,
                       "priority": draw(st.integers(0, 2)), "wrap_up_s": draw(st.sampled_from([0, 5])),
                       "preferred_agent_s": draw(st.sampled_from([0, 0, 15])), "overflow": ov})
    return Settings.model_validate({"agents": agents, "queues": queues, "priority_rules": [
        {"name": "vip", "when": "account.won_amount_24m >= 50000", "boost": 5}]})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(centres(), st.integers(20, 120), st.floats(0.5, 1.0), st.integers(0, 10_000))
def test_simulated_hours_keep_every_invariant(centre, calls, answer_prob, seed):
    p = SimParams(duration_s=600, calls=calls, talk_mean_s=40, patience_mean_s=90, answer_prob=answer_prob,
                  vip_share=0.2, owner_share=0.2, callback_accept_prob=0.7, seed=seed)
    sim = Simulation(centre, p, check=True)
    res = sim.run()
    assert res.violations == []
    by_queue = {q.name: q for q in centre.queues}
    for d in sim.decision_log:
        ov = by_queue[d.queue].overflow if d.queue in by_queue else None
        if d.action == "widen":
            assert abs(d.wait_s - ov.after_s) < 1e-6
        if d.action in ("overflow_voicemail", "callback_offer"):
            due = max(ov.after_s, by_queue[d.queue].max_wait_s) if ov.widen else ov.after_s
            assert d.wait_s >= due - 1e-6
            # late only when the call was ringing an agent at its time
            assert d.wait_s <= due + 8 + 1e-6
    # every call ends one way at most: answered, abandoned, voicemail (or still waiting at the end)
    for qs in res.queues.values():
        assert qs.answered + qs.abandoned + qs.voicemail + qs.rejected <= qs.offered


OPS = st.lists(st.tuples(st.sampled_from(["call", "answer", "noans", "end", "state", "tick", "reconf"]),
                         st.integers(0, 50), st.floats(0, 20)), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(centres(), OPS)
def test_any_event_order_keeps_the_invariants(centre, ops):
    """Events in any order (duplicates, unknown agents, late no-answers) never break the engine's invariants."""
    e = Engine(compile_routing(centre), ring_grace_s=0)
    now = T0
    agents = [a.id for a in centre.agents]
    queues = [q.name for q in centre.queues]
    calls: list[str] = []
    for op, n, dt in ops:
        now += dt
        if op == "call":
            cid = f"c{len(calls)}"
            calls.append(cid)
            e.enqueue(CallIn(cid, queues[n % len(queues)], owner=agents[n % len(agents)] if n % 3 == 0 else None,
                             contact={"account.won_amount_24m": 60_000} if n % 4 == 0 else None), now)
        elif op in ("answer", "noans", "end") and calls:
            cid = calls[n % len(calls)]
            item = e.items.get(cid)
            offered = sorted(item.offered) if item else []
            agent = offered[n % len(offered)] if offered else agents[n % len(agents)]
            if op == "answer":
                if offered:  # the PBX only connects an agent we rang (direct calls are tested elsewhere)
                    e.answered(cid, agent, now)
            elif op == "noans":
                e.no_answer(cid, agent, now)
            else:
                e.ended(cid, now)
        elif op == "state":
            agent = agents[n % len(agents)]
            target = ["available", "away", "offline", "available"][n % 4]
            try:
                e.set_agent_state(agent, target, "break", now)
            except Exception as exc:  # InvalidTransition is fine, anything else is a bug
                assert type(exc).__name__ == "InvalidTransition", exc
        elif op == "reconf":
            e.reconfigure(compile_routing(centre))   # a SIGHUP with the same file
            e.advance(now)                           # the router ticks right after
        else:
            e.advance(now)
        assert invariant_violations(e, now) == []
