"""A discrete-event contact-centre simulation over the pure engine (no asyncio, no sleeping).

Callers arrive (Poisson per queue), wait with a random patience, agents answer
an offer after a few seconds (or let it ring out), talk, wrap up. The engine
decides; the simulation plays the PBX and the people. Used by
`bench/routing_sim.py` (a busy hour) and by the invariant tests (small runs
with `check=True`, which verifies after every step that no agent is beyond
capacity and that no call waits while an eligible agent is free).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cti.config import Settings
from cti.model import AgentState
from cti.routing.decision import Decision
from cti.routing.engine import (
    OFFERED,
    PREFERRED,
    QUEUED,
    Action,
    AgentRt,
    CallIn,
    Engine,
    Item,
    Offer,
    Overflow,
    StateChange,
)
from cti.routing.queues import compile_routing

START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC).timestamp()  # a Monday, 09:00 in Paris


@dataclass
class SimParams:
    duration_s: float = 3600.0
    calls: int = 30_000
    talk_mean_s: float = 45.0
    patience_mean_s: float = 120.0
    answer_prob: float = 0.95
    answer_delay_s: tuple[float, float] = (1.0, 6.0)
    callback_accept_prob: float = 0.5
    customer_answer_prob: float = 0.8
    vip_share: float = 0.05
    owner_share: float = 0.0
    seed: int = 1


@dataclass
class QueueStats:
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    within_sl: int = 0
    wait_answered_s: float = 0.0
    voicemail: int = 0
    callbacks: int = 0
    callbacks_done: int = 0
    rejected: int = 0


@dataclass
class SimResult:
    queues: dict[str, QueueStats]
    occupancy: dict[str, float]
    agent_occupancy: float
    decisions: int
    sim_seconds: float
    violations: list[str] = field(default_factory=list)

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for name, q in sorted(self.queues.items()):
            rows.append({
                "queue": name,
                "offered": q.offered,
                "answered": q.answered,
                "service_level": round(q.within_sl / q.offered, 4) if q.offered else 0.0,
                "asa_s": round(q.wait_answered_s / q.answered, 2) if q.answered else 0.0,
                "abandon_rate": round(q.abandoned / q.offered, 4) if q.offered else 0.0,
                "voicemail": q.voicemail,
                "callbacks": q.callbacks,
                "occupancy": round(self.occupancy.get(name, 0.0), 4),
            })
        return rows


class Simulation:
    def __init__(self, settings: Settings, params: SimParams, *, check: bool = False) -> None:
        self.settings = settings
        self.p = params
        self.rng = random.Random(params.seed)
        self.engine = Engine(compile_routing(settings), ring_grace_s=0.0)
        if check:
            self.engine.observer = self._check_fifo
        self.check = check
        self.events: list[tuple[float, int, str, tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self.stats: dict[str, QueueStats] = defaultdict(QueueStats)
        self.call_queue: dict[str, str] = {}
        self.arrived: dict[str, float] = {}
        self.done: set[str] = set()
        self.callback_calls: set[str] = set()
        self.busy: dict[str, float] = defaultdict(float)
        self.busy_since: dict[str, float] = {}
        self.violations: list[str] = []
        self.decision_log: list[Decision] = []
        self.decisions = 0
        self.now = START
        self.sl = {q.name: q.service_level_s for q in settings.queues}

    def at(self, t: float, kind: str, *args: Any) -> None:
        heapq.heappush(self.events, (t, next(self._seq), kind, args))

    # ---- set-up ------------------------------------------------------------------

    def _schedule_arrivals(self) -> None:
        queues = [q.name for q in self.settings.queues]
        weights = [1.0 + (i % 4) for i in range(len(queues))]
        agents = [a.id for a in self.settings.agents]
        t = START
        rate = self.p.calls / self.p.duration_s
        for i in range(self.p.calls):
            t += self.rng.expovariate(rate)
            q = self.rng.choices(queues, weights)[0]
            contact = {"account": {"won_amount_24m": 90_000}} if self.rng.random() < self.p.vip_share else None
            owner = self.rng.choice(agents) if agents and self.rng.random() < self.p.owner_share else None
            self.at(t, "arrive", f"c{i}", q, contact, owner)

    # ---- running -----------------------------------------------------------------

    def run(self) -> SimResult:
        for a in self.settings.agents:
            self._apply(self.engine.set_agent_state(a.id, "available", None, START))
        self._schedule_arrivals()
        end = START + self.p.duration_s
        while self.events or self.engine.next_timer() is not None:
            nt = self.engine.next_timer()
            ne = self.events[0][0] if self.events else None
            if nt is not None and (ne is None or nt <= ne):
                self.now = nt
                self._apply(self.engine.advance(nt))
            else:
                t, _, kind, args = heapq.heappop(self.events)
                self.now = t
                getattr(self, f"_on_{kind}")(*args)
            if self.check:
                self._check()
            if self.now > end + 4 * 3600:
                break
        for a, since in self.busy_since.items():
            self.busy[a] += max(0.0, min(self.now, end) - since)
        return self._result(end)

    def _apply(self, actions: list[Action]) -> None:
        for act in actions:
            if isinstance(act, StateChange):
                busy = act.state in (AgentState.RINGING, AgentState.ON_CALL, AgentState.WRAP_UP)
                if busy and act.agent not in self.busy_since:
                    self.busy_since[act.agent] = act.at
                elif not busy and act.agent in self.busy_since:
                    self.busy[act.agent] += act.at - self.busy_since.pop(act.agent)
            elif isinstance(act, Offer):
                self.decisions += 1
                if self.check:
                    self.decision_log.append(act.decision)
                self._on_offer(act)
            elif isinstance(act, Overflow):
                self.decisions += 1
                if self.check:
                    self.decision_log.append(act.decision)
                self._on_overflow(act)

    def _on_offer(self, o: Offer) -> None:
        call = o.dial_call_id or o.call_id
        # each target answers after a delay, or lets it ring out (the engine's ring timer handles it)
        answers = [(self.rng.uniform(*self.p.answer_delay_s), a) for a, _ in o.targets
                   if self.rng.random() < self.p.answer_prob]
        answers = [x for x in answers if x[0] < o.timeout_s]
        if answers:
            delay, agent = min(answers)
            self.at(self.now + delay, "answer", call, o.call_id, agent, o.callback is not None)

    def _on_overflow(self, o: Overflow) -> None:
        # counted in the queue the caller entered first, like `offered`
        st = self.stats[self.call_queue.get(o.call_id, o.queue)]
        if o.kind in ("voicemail", "rejected", "callback_failed") and o.call_id not in self.done:
            if o.kind == "voicemail":
                st.voicemail += 1
            elif o.kind == "rejected":
                st.rejected += 1
            self.done.add(o.call_id)
        elif o.kind == "callback_offer":
            if self.rng.random() < self.p.callback_accept_prob:
                self.at(self.now + 3.0, "callback", o.call_id)

    def _on_arrive(self, call_id: str, queue: str, contact: dict[str, Any] | None, owner: str | None) -> None:
        self.stats[queue].offered += 1
        self.call_queue[call_id] = queue
        self.arrived[call_id] = self.now
        self.at(self.now + self.rng.expovariate(1.0 / self.p.patience_mean_s), "abandon", call_id)
        self._apply(self.engine.enqueue(CallIn(call_id, queue, contact=contact, owner=owner), self.now))

    def _on_answer(self, call: str, item_id: str, agent: str, is_callback: bool) -> None:
        it = self.engine.resolve(call)
        if it is None or it.status != OFFERED or agent not in it.offered:
            return
        if is_callback and self.rng.random() >= self.p.customer_answer_prob:
            self.at(self.now + 15.0, "dial_fail", call)
            return
        q = it.queue
        wait = self.now - it.position
        self._apply(self.engine.answered(call, agent, self.now))
        if item_id in self.done:
            return
        self.done.add(item_id)
        st = self.stats[self.call_queue.get(item_id, q)]
        st.answered += 1
        if is_callback:
            st.callbacks_done += 1
        else:
            st.wait_answered_s += wait
            if wait <= self.sl.get(q, 20.0):
                st.within_sl += 1
        self.at(self.now + self.rng.expovariate(1.0 / self.p.talk_mean_s), "hangup", call)

    def _on_dial_fail(self, call: str) -> None:
        self._apply(self.engine.ended(call, self.now))

    def _on_hangup(self, call: str) -> None:
        self._apply(self.engine.ended(call, self.now))

    def _on_abandon(self, call_id: str) -> None:
        it = self.engine.items.get(call_id)
        if call_id in self.done or it is None or it.callback is not None:
            return
        if it.status not in (QUEUED, PREFERRED, OFFERED, "retry"):
            return
        st = self.stats[self.call_queue[call_id]]
        st.abandoned += 1
        if self.now - self.arrived[call_id] < 5.0:
            st.short_abandoned += 1
        self.done.add(call_id)
        self._apply(self.engine.ended(call_id, self.now))

    def _on_callback(self, call_id: str) -> None:
        it = self.engine.items.get(call_id)
        if it is None or call_id in self.done:
            return
        if self.engine.request_callback(call_id, "+33100000000", self.now) is not None:
            self.stats[self.call_queue[call_id]].callbacks += 1
            self._apply(self.engine.ended(call_id, self.now))  # the caller hangs up, keeps the place

    # ---- checks ------------------------------------------------------------------

    def _check(self) -> None:
        self.violations += invariant_violations(self.engine, self.now)

    def _check_fifo(self, it: Item, targets: list[AgentRt], now: float) -> None:
        """At the instant of an offer: no older call of the same priority in the same pool was passed over."""
        if len(targets) != 1 or it.owner or it.tried or it.callback is not None:
            return
        agent = targets[0].id
        for other in self.engine.items.values():
            if other is it or other.status != QUEUED or other.queue != it.queue or other.tier != it.tier:
                continue
            if other.priority == it.priority and other.key() < it.key() and agent not in other.tried:
                self.violations.append(f"{now}: FIFO: {it.call_id} offered before older {other.call_id}")

    def _result(self, end: float) -> SimResult:
        occ: dict[str, float] = {}
        agents = {a.id: a for a in self.settings.agents}
        dur = self.p.duration_s
        for pool in self.engine.pools.values():
            if pool.tier != 0 or not pool.eligible:
                continue
            occ[pool.queue.name] = sum(min(self.busy[a], dur) for a in pool.eligible) / (len(pool.eligible) * dur)
        total = sum(min(self.busy[a], dur) for a in agents) / (max(1, len(agents)) * dur)
        return SimResult(dict(self.stats), occ, total, self.decisions, self.now - START, self.violations)


def invariant_violations(e: Engine, now: float) -> list[str]:
    """What must always hold: capacity, no idle agent beside a call it could take, states match legs."""
    out: list[str] = []
    for rt in e.agents.values():
        if len(rt.legs) > rt.cfg.capacity:
            out.append(f"{now}: {rt.id} has {len(rt.legs)} calls > capacity {rt.cfg.capacity}")
        kinds = set(rt.legs.values())
        if "connected" in kinds and rt.state is not AgentState.ON_CALL:
            out.append(f"{now}: {rt.id} talks but is {rt.state}")
        if rt.state in (AgentState.ON_CALL, AgentState.RINGING) and not kinds:
            out.append(f"{now}: {rt.id} is {rt.state} without a call")
    free = [rt for rt in e.agents.values() if e._free(rt, now)]
    if not free:
        return out
    for it in e.items.values():
        if it.status != QUEUED:
            continue
        pool = e._pool_of(it)
        if pool is None:
            continue
        for rt in free:
            if rt.id in pool.eligible:
                out.append(f"{now}: call {it.call_id} waits in {it.queue} while {rt.id} is free")
                return out
    return out


def busy_hour_settings(agents: int = 500, queues: int = 20, seed: int = 7, *, strategies: tuple[str, ...] = (
        "longest_idle", "fewest_calls", "round_robin", "best_skill", "linear"), wrap_up_s: float = 5.0) -> Settings:
    """A synthetic centre: each queue needs one primary skill (>= 3) or its backup skill (>= 6)."""
    rng = random.Random(seed)
    skills = [f"s{i}" for i in range(queues)]
    agent_rows = []
    for i in range(agents):
        mine = rng.sample(skills, rng.randint(2, 5))
        agent_rows.append({"id": f"a{i}", "name": f"Agent {i}", "skills": {s: rng.randint(1, 10) for s in mine},
                           "endpoints": {"sim": f"SIP/a{i}"}})
    queue_rows = []
    for i in range(queues):
        primary, backup = skills[i], skills[(i + 7) % queues]
        queue_rows.append({
            "name": f"q{i}", "numbers": [f"+3317000{i:04d}"], "requires": f"{primary} >= 3 or {backup} >= 6",
            "strategy": strategies[i % len(strategies)], "ring_timeout_s": 12, "max_wait_s": 40,
            "service_level_s": 20, "wrap_up_s": wrap_up_s,
            # a third of the queues widen after 20 s then offer a callback at 40 s, a third go to
            # voicemail after 45 s, a third keep callers until they hang up
            "overflow": {"after_s": 20, "widen": f"{primary} >= 1", "then": "callback"} if i % 3 == 0 else
                        ({"after_s": 45, "then": "voicemail"} if i % 3 == 1 else None),
        })
    return Settings.model_validate({
        "agents": agent_rows, "queues": queue_rows,
        "priority_rules": [{"name": "vip", "when": "account.won_amount_24m >= 50000", "boost": 50}],
    })
