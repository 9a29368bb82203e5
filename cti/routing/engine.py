"""The ACD decision core: no I/O, no clock, no asyncio.

Every method takes `now` (epoch seconds) and returns a list of *actions* for
the runtime (`cti.routing.acd.Router`) or a simulator to carry out:
`Offer` (ring these agents for that call, or originate a callback),
`Overflow` (voicemail / callback offer), `StateChange` (an agent's state
moved: publish it). The same inputs always give the same actions, which is
what makes the engine testable with hypothesis and fast to simulate.

Data structures (why decisions are O(log n), not O(agents)):
- a *pool* is (queue, tier): tier 0 is the queue's requirement, tier 1 its
  widened requirement after overflow.after_s. Eligibility is computed once per
  (agent, pool) when the configuration or the agent changes, never per call.
- each pool keeps its free agents in a heap ordered by the strategy's key and
  its waiting calls in a heap ordered by (-priority, position, seq) - FIFO
  within the same priority. Entries are invalidated lazily by a version
  number, so state changes are O(pools of that agent · log n).
- a free agent looks only at the heads of its pools' waiting heaps; a new call
  pops only the head(s) of its pool's agent heap.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from cti.model import AgentState
from cti.routing import strategies as st
from cti.routing.callbacks import DIALING, DONE, FAILED, WAITING, CallbackRequest
from cti.routing.decision import Candidate, Decision
from cti.routing.hours import is_open
from cti.routing.queues import AgentConfig, QueueConfig, RoutingConfig
from cti.routing.rules import apply_rules
from cti.routing.skills import skill_score
from cti.routing.states import MANUAL_TARGETS, UnknownAgent, transition

log = structlog.get_logger("cti.routing")

S = AgentState
CANDIDATES_RECORDED = 5       # how many runner-up agents a decision records
DEEP_SCAN = 32                # waiting calls a free agent looks past when it was already tried
CALLBACK_RETRY_S = 120.0
CALLBACK_MAX_ATTEMPTS = 3
MAX_HOPS = 4                  # overflow chains (a -> b -> a) end in voicemail after this many moves

# call statuses
PREFERRED = "preferred"       # waiting for the CRM owner only
QUEUED = "waiting"
OFFERED = "offered"           # ringing one or more agents
CONNECTED = "connected"
GONE = "gone"


# ---- actions ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StateChange:
    agent: str
    state: AgentState
    reason: str | None
    previous: AgentState
    at: float
    remote: bool = False  # mirrored from another node: not published again


@dataclass(frozen=True, slots=True)
class Offer:
    """Ring `targets` for `call_id` (Connect), or - when `callback` is set - originate it."""

    call_id: str
    queue: str
    provider: str
    provider_call_id: str
    targets: tuple[tuple[str, str], ...]   # (agent, endpoint)
    timeout_s: float
    decision: Decision
    callback: CallbackRequest | None = None
    dial_call_id: str | None = None        # callback: the originated call's id


@dataclass(frozen=True, slots=True)
class Overflow:
    """kind: voicemail (transfer to `target`) | callback_offer (play `target` as a prompt) | rejected."""

    call_id: str
    queue: str
    provider: str
    provider_call_id: str
    kind: str
    target: str | None
    decision: Decision


@dataclass(frozen=True, slots=True)
class LegEnded:
    """The agent no longer rings for / talks on this call: release their reservation."""

    agent: str
    call_id: str


@dataclass(frozen=True, slots=True)
class LegConnected:
    """The agent took this call: hold their reservation for the length of the call."""

    agent: str
    call_id: str


Action = StateChange | Offer | Overflow | LegEnded | LegConnected


# ---- runtime records -------------------------------------------------------------

@dataclass(slots=True)
class AgentRt:
    cfg: AgentConfig
    state: AgentState = S.OFFLINE
    reason: str | None = None
    legs: dict[str, str] = field(default_factory=dict)  # call_id -> ringing | connected
    leg_queue: dict[str, str | None] = field(default_factory=dict)
    idle_since: float = 0.0
    calls_taken: int = 0
    version: int = 0
    blocked_until: float = 0.0
    wrap_until: float = 0.0
    retired: bool = False
    pools: list[Pool] = field(default_factory=list)
    last_offer: dict[str, int] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.cfg.id


@dataclass(slots=True)
class Item:
    """A call (or a callback request) the engine is routing."""

    call_id: str
    tenant: str
    queue: str
    provider: str
    provider_call_id: str
    from_number: str | None
    boost: int
    rules: tuple[str, ...]
    priority: int
    entered: float               # entered its current queue
    position: float              # FIFO place (kept across overflow to another queue and callbacks)
    seq: int
    owner: str | None = None
    preferred_until: float = 0.0
    tier: int = 0
    tried: set[str] = field(default_factory=set)
    version: int = 0
    status: str = QUEUED
    offered: set[str] = field(default_factory=set)
    agent: str | None = None
    callback: CallbackRequest | None = None
    callback_offered: bool = False
    hops: int = 0                # overflows to another queue so far
    overflow_due: bool = False   # overflow time passed while ringing: overflow when the ring ends

    def key(self) -> tuple[int, float, int]:
        return (-self.priority, self.position, self.seq)


class Pool:
    __slots__ = ("agents", "counts", "eligible", "expr", "queue", "skill", "tier", "waiting")

    def __init__(self, queue: QueueConfig, tier: int) -> None:
        self.queue = queue
        self.tier = tier
        self.expr = queue.requires if tier == 0 else queue.widened
        self.eligible: set[str] = set()
        self.skill: dict[str, int] = {}
        self.agents: list[tuple[tuple[Any, ...], str, int]] = []
        self.waiting: list[tuple[tuple[int, float, int], str, int]] = []
        self.counts: dict[AgentState, int] = dict.fromkeys(AgentState, 0)  # eligible agents per state


@dataclass(frozen=True, slots=True)
class CallIn:
    """What the engine needs to know about a call entering a queue."""

    call_id: str
    queue: str
    provider: str = "sim"
    provider_call_id: str = ""
    tenant: str = "default"
    from_number: str | None = None
    contact: Mapping[str, Any] | None = None   # CRM fields for priority rules (nested or dotted)
    owner: str | None = None                   # CRM owner: offered first for preferred_agent_s
    position: float | None = None              # keep an earlier place (callbacks, transfers)


class Engine:
    """Queues, agents, waiting calls and timers. Not thread-safe; the Router serializes calls."""

    def __init__(self, cfg: RoutingConfig, *, ring_grace_s: float = 3.0) -> None:
        self.ring_grace_s = ring_grace_s
        self._seq = itertools.count()
        self._tseq = itertools.count()
        self.agents: dict[str, AgentRt] = {}
        self.items: dict[str, Item] = {}
        self.alias: dict[str, str] = {}            # originated callback call id -> item call id
        self.preferred: dict[str, dict[str, Item]] = {}
        self.timers: list[tuple[float, int, str, str, int]] = []
        self.offer_seq = itertools.count(1)
        self.cfg = cfg
        self.pools: dict[tuple[str, int], Pool] = {}
        self.queues: dict[str, QueueConfig] = {}
        self.observer: Callable[[Item, list[AgentRt], float], None] | None = None
        self._install(cfg)

    # ---- configuration -----------------------------------------------------------

    def _install(self, cfg: RoutingConfig) -> None:
        """Build pools and eligibility for `cfg`, keeping agents' runtime state and waiting calls."""
        self.cfg = cfg
        self.queues = {q.name: q for q in cfg.queues}
        self.pools = {}
        for q in cfg.queues:
            self.pools[(q.name, 0)] = Pool(q, 0)
            if q.widened is not None:
                self.pools[(q.name, 1)] = Pool(q, 1)
        configured = {a.id for a in cfg.agents}
        for a in cfg.agents:
            rt = self.agents.get(a.id)
            if rt is None:
                rt = self.agents[a.id] = AgentRt(a)
            rt.cfg = a
            rt.retired = False
        for aid, rt in self.agents.items():
            if aid not in configured:
                rt.retired = True  # keeps its calls; never offered another
        self._index_agents()
        for item in self.items.values():
            if item.queue not in self.queues and item.status in (QUEUED, PREFERRED, "retry"):
                # its queue was removed: the next tick sends it to voicemail (the caller is not left waiting)
                log.warning("routing_queue_removed", call_id=item.call_id, queue=item.queue)
                self._timer(0.0, "orphan", item.call_id)
                continue
            if item.tier == 1 and (item.queue, 1) not in self.pools:
                item.tier = 0
            if item.status == QUEUED:
                self._push_item(item)
        # requirements may have widened: free agents look for waiting calls at the next tick
        self._timer(0.0, "rematch", "")

    def _index_agents(self) -> None:
        """Eligibility of every agent for every pool, evaluated once per configuration.

        A requirement false for an agent with no skills ({}) can only match agents holding one of
        the skills it names (a missing skill reads as 0, exactly like {}), so only those are tested:
        with 10,000 agents and 100 skills this is several times fewer evaluations than all pairs.
        """
        active = [rt for rt in self.agents.values() if not rt.retired]
        by_skill: dict[str, list[AgentRt]] = {}
        for rt in self.agents.values():
            rt.pools = []
        for rt in active:
            for sk in rt.cfg.skills:
                by_skill.setdefault(sk, []).append(rt)
        for pool in self.pools.values():
            expr = pool.expr
            if expr is None:
                continue
            if expr.test({}):
                cands: Iterable[AgentRt] = active
            else:
                seen: dict[str, AgentRt] = {}
                for name in expr.names:
                    for rt in by_skill.get(name, ()):
                        seen[rt.id] = rt
                cands = seen.values()
            names = pool.queue.skill_names
            for rt in cands:
                if expr.test(rt.cfg.skills):
                    pool.eligible.add(rt.id)
                    pool.skill[rt.id] = skill_score(rt.cfg.skills, names)
                    pool.counts[rt.state] += 1
                    rt.pools.append(pool)
        for rt in self.agents.values():
            rt.version += 1
            self._push_agent(rt, 0.0)

    def reconfigure(self, cfg: RoutingConfig) -> None:
        """Swap to a new compiled configuration; calls in progress and agent states carry over."""
        for p in list(self.pools.values()):
            p.agents.clear()
            p.waiting.clear()
        self._install(cfg)

    # ---- helpers -----------------------------------------------------------------

    def _free(self, rt: AgentRt, now: float) -> bool:
        if rt.retired or rt.blocked_until > now or len(rt.legs) >= rt.cfg.capacity:
            return False
        if rt.state is S.AVAILABLE:
            return True
        # blended work: an agent with capacity > 1 takes more while on a call
        return rt.cfg.capacity > 1 and rt.state in (S.ON_CALL, S.RINGING)

    def _agent_key(self, rt: AgentRt, pool: Pool) -> tuple[Any, ...]:
        return st.sort_key(pool.queue.strategy, idle_since=rt.idle_since, calls=rt.calls_taken,
                           last_offer=rt.last_offer.get(pool.queue.name, 0), order=rt.cfg.order,
                           skill=pool.skill.get(rt.id, 0))

    def _push_agent(self, rt: AgentRt, now: float) -> None:
        if not self._free(rt, now):
            return
        for pool in rt.pools:
            heapq.heappush(pool.agents, (self._agent_key(rt, pool), rt.id, rt.version))
            if len(pool.agents) > 4 * len(pool.eligible) + 64:
                self._compact_agents(pool, now)

    def _compact_agents(self, pool: Pool, now: float) -> None:
        agents = self.agents
        pool.agents = [e for e in pool.agents if (a := agents.get(e[1])) is not None and a.version == e[2]
                       and self._free(a, now)]
        heapq.heapify(pool.agents)

    def _touch(self, rt: AgentRt, now: float) -> None:
        """The agent's state or load changed: invalidate its heap entries, re-add it if free."""
        rt.version += 1
        self._push_agent(rt, now)

    def _pool_of(self, item: Item) -> Pool | None:
        return self.pools.get((item.queue, item.tier)) or self.pools.get((item.queue, 0))

    def _push_item(self, item: Item) -> None:
        pool = self._pool_of(item)
        if pool is None:
            return
        item.version += 1
        heapq.heappush(pool.waiting, (item.key(), item.call_id, item.version))
        # stale entries pile up as calls move; compact when the heap outgrows every live call (O(1) test)
        if len(pool.waiting) > 2 * len(self.items) + 64:
            pool.waiting = [e for e in pool.waiting if self._item_valid(e)]
            heapq.heapify(pool.waiting)

    def _item_valid(self, entry: tuple[Any, str, int]) -> bool:
        it = self.items.get(entry[1])
        return it is not None and it.version == entry[2] and it.status == QUEUED

    def _timer(self, when: float, kind: str, key: str, version: int = 0) -> None:
        heapq.heappush(self.timers, (when, next(self._tseq), kind, key, version))

    def _set_state(self, rt: AgentRt, state: AgentState, reason: str | None, now: float,
                   out: list[Action]) -> None:
        prev = rt.state
        if prev is state and rt.reason == reason:
            return
        if state is S.AVAILABLE and prev is not S.AVAILABLE:
            rt.idle_since = now
        if prev is not state:
            for pool in rt.pools:
                pool.counts[prev] -= 1
                pool.counts[state] += 1
        rt.state = state
        rt.reason = reason
        out.append(StateChange(rt.id, state, reason, prev, now))

    def _settle(self, rt: AgentRt, now: float, out: list[Action], *, wrap_s: float = 0.0,
                ended: bool = False) -> None:
        """Derive the agent's state from its legs after one of them changed."""
        kinds = set(rt.legs.values())
        if "connected" in kinds:
            self._set_state(rt, S.ON_CALL, None, now, out)
        elif "ringing" in kinds:
            self._set_state(rt, S.RINGING, None, now, out)
        elif rt.state in (S.ON_CALL, S.RINGING):
            if ended and rt.state is S.ON_CALL and wrap_s > 0:
                self._set_state(rt, S.WRAP_UP, None, now, out)
                rt.wrap_until = now + wrap_s
                self._timer(rt.wrap_until, "wrap", rt.id)
            else:
                self._set_state(rt, S.AVAILABLE, None, now, out)
        self._touch(rt, now)

    @staticmethod
    def _drop_leg(rt: AgentRt, call_id: str, out: list[Action]) -> str | None:
        was = rt.legs.pop(call_id, None)
        rt.leg_queue.pop(call_id, None)
        if was is not None:
            out.append(LegEnded(rt.id, call_id))
        return was

    @staticmethod
    def _connect_leg(rt: AgentRt, call_id: str, queue: str | None, out: list[Action]) -> None:
        rt.legs[call_id] = "connected"
        rt.leg_queue[call_id] = queue
        out.append(LegConnected(rt.id, call_id))

    def agent(self, agent: str) -> AgentRt:
        rt = self.agents.get(agent)
        if rt is None:
            raise UnknownAgent(agent)
        return rt

    def _decision(self, item: Item, now: float, action: str, chosen: str | None, reason: str,
                  candidates: tuple[Candidate, ...] = ()) -> Decision:
        q = self.queues.get(item.queue)
        rules = f" [rules: {', '.join(item.rules)}]" if item.rules else ""
        return Decision(item.call_id, item.tenant, item.queue, now, action, chosen, reason + rules,
                        q.strategy if q else None, item.priority, item.rules, candidates,
                        round(now - item.entered, 3))

    def _candidate(self, rt: AgentRt, pool: Pool, now: float, preferred: bool = False) -> Candidate:
        score, parts = st.score_parts(pool.queue.strategy, now=now, idle_since=rt.idle_since,
                                      calls=rt.calls_taken, last_offer=rt.last_offer.get(pool.queue.name, 0),
                                      order=rt.cfg.order, skill=pool.skill.get(rt.id, 0))
        if preferred:
            parts["preferred"] = 1.0
        return Candidate(rt.id, score, parts)

    # ---- agents ------------------------------------------------------------------

    def set_agent_state(self, agent: str, state: AgentState | str, reason: str | None, now: float,
                        *, manual: bool = True) -> list[Action]:
        """Agent / supervisor / API request. Raises UnknownAgent, InvalidTransition, ValueError."""
        rt = self.agent(agent)
        from cti.routing.states import InvalidTransition, parse_state

        target = parse_state(state)
        if manual and target not in MANUAL_TARGETS:
            raise InvalidTransition(rt.state, target, "ringing and on_call come from calls")
        if manual and target is S.WRAP_UP and rt.state is not S.WRAP_UP:
            raise InvalidTransition(rt.state, target, "wrap_up follows a call")
        if manual and "connected" in rt.legs.values() and target is not rt.state:
            raise InvalidTransition(rt.state, target, "the agent is on a call")
        if manual and rt.legs and target is S.AVAILABLE:
            raise InvalidTransition(rt.state, target, "a call is ringing for the agent")
        new = transition(rt.state, target, reason)
        out: list[Action] = []
        self._set_state(rt, new, reason if new is S.AWAY else None, now, out)
        self._touch(rt, now)
        if new in (S.AWAY, S.OFFLINE):
            # an agent who leaves while ringing declines those offers
            for call_id, kind in list(rt.legs.items()):
                if kind == "ringing":
                    out += self._leg_no_answer(call_id, rt, now, settle=False)
        if self._free(rt, now):
            out += self._try_agent(rt, now)
        return out

    def remote_state(self, agent: str, state: AgentState, reason: str | None, now: float) -> list[Action]:
        """Mirror a state another node set (it routed a call to the agent, or the agent logged in there).

        Our own calls own the state while the agent has legs here; otherwise the other node's word
        stands, so this node neither offers a busy agent nor forgets a free one.
        """
        rt = self.agents.get(agent)
        if rt is None or rt.legs or (rt.state is state and rt.reason == reason):
            return []
        out: list[Action] = []
        self._set_state(rt, state, reason if state is S.AWAY else None, now, out)
        out = [StateChange(a.agent, a.state, a.reason, a.previous, a.at, remote=True)
               if isinstance(a, StateChange) else a for a in out]
        self._touch(rt, now)
        if self._free(rt, now):
            out += self._try_agent(rt, now)
        return out

    # ---- calls entering ----------------------------------------------------------

    def enqueue(self, call: CallIn, now: float) -> list[Action]:
        """A call enters a queue (deduped on call_id)."""
        if call.call_id in self.items or call.call_id in self.alias:
            return []
        q = self.queues.get(call.queue)
        out: list[Action] = []
        boost, reasons = apply_rules(self.cfg.rules, call.contact) if call.contact else (0, [])
        item = Item(call.call_id, call.tenant, call.queue, call.provider, call.provider_call_id,
                    call.from_number, boost, tuple(reasons), (q.priority if q else 0) + boost, now,
                    call.position if call.position is not None else now, next(self._seq),
                    owner=call.owner, status="new")
        self.items[item.call_id] = item
        if q is None:
            item.status = GONE
            d = self._decision(item, now, "rejected", None, f"unknown queue {call.queue!r}")
            out.append(Overflow(item.call_id, call.queue, item.provider, item.provider_call_id, "rejected",
                                None, d))
            return out
        return out + self._enter_queue(item, q, now)

    def _enter_queue(self, item: Item, q: QueueConfig, now: float, try_now: bool = True) -> list[Action]:
        if not is_open(q.hours, now, self.cfg.tz):
            return self._overflow(item, q, now, "closed", f"queue {q.name} is closed (hours/holiday)")
        if q.max_length is not None and self.queue_length(q.name) >= q.max_length:
            return self._overflow(item, q, now, "queue_full", f"queue {q.name} has {q.max_length} waiting")
        item.status = QUEUED
        if q.widen_after_s is not None:
            self._timer(item.entered + q.widen_after_s, "widen", item.call_id)
        if q.then_after_s is not None:
            self._timer(item.entered + q.then_after_s, "then", item.call_id)
        owner = self.agents.get(item.owner) if item.owner else None
        if owner is not None and not owner.retired and q.preferred_agent_s > 0 and item.hops == 0:
            item.status = PREFERRED
            item.preferred_until = now + q.preferred_agent_s
            self.preferred.setdefault(owner.id, {})[item.call_id] = item
            self._timer(item.preferred_until, "preferred", item.call_id, 0)
            if self._free(owner, now):
                return self._offer(item, [owner], now, "preferred agent (CRM owner)",
                                   (self._candidate(owner, self._pool_of(item) or Pool(q, 0), now, True),),
                                   timeout=min(q.ring_timeout_s, max(1.0, q.preferred_agent_s)))
            return []
        self._push_item(item)
        return self._try_call(item, now) if try_now else []

    def queue_length(self, queue: str) -> int:
        return sum(1 for it in self.items.values() if it.queue == queue and it.status in (QUEUED, PREFERRED))

    # ---- matching ----------------------------------------------------------------

    def _try_call(self, item: Item, now: float, allow_retry: bool = True) -> list[Action]:
        """A call became routable: offer it to the best free agent(s) of its pool."""
        pool = self._pool_of(item)
        if pool is None or item.status != QUEUED:
            return []
        q = pool.queue
        agents = self.agents
        if q.strategy == st.RING_ALL:
            free = [agents[a] for a in pool.eligible if self._free(agents[a], now)]
            untried = [a for a in free if a.id not in item.tried] or (free if allow_retry else [])
            if not untried:
                return []
            if len(untried) == len(free) and any(a.id in item.tried for a in free):
                item.tried.clear()
            untried.sort(key=lambda a: a.cfg.order)
            cands = tuple(self._candidate(a, pool, now) for a in untried)
            return self._offer(item, untried, now, f"ring_all: {len(untried)} free agents", cands)
        picked: list[tuple[tuple[Any, ...], str, int]] = []
        valid: list[AgentRt] = []
        first_untried: AgentRt | None = None
        heap = pool.agents
        while heap and (first_untried is None or len(valid) < CANDIDATES_RECORDED):
            entry = heapq.heappop(heap)
            rt = agents.get(entry[1])
            if rt is None or rt.version != entry[2] or not self._free(rt, now):
                continue  # stale
            picked.append(entry)
            valid.append(rt)
            if first_untried is None and rt.id not in item.tried:
                first_untried = rt
        chosen = first_untried
        if chosen is None and valid and allow_retry:
            chosen = valid[0]       # every free agent already tried: go round again
            item.tried.clear()
        for entry in picked:
            if chosen is None or entry[1] != chosen.id:
                heapq.heappush(heap, entry)
        if chosen is None:
            return []
        cands = tuple(self._candidate(a, pool, now) for a in valid)
        why = self._why(q.strategy, chosen, valid, item)
        return self._offer(item, [chosen], now, why, cands)

    @staticmethod
    def _why(strategy: str, chosen: AgentRt, valid: list[AgentRt], item: Item) -> str:
        ahead = valid[:valid.index(chosen)] if chosen in valid else []
        skipped = [a.id for a in ahead if a.id in item.tried]
        text = f"{strategy}: {chosen.id} ranked first of {len(valid)} free agents considered"
        if skipped:
            text += f" (skipped {', '.join(skipped)}: already rang for this call)"
        return text

    def _try_agent(self, rt: AgentRt, now: float, allow_retry: bool = True) -> list[Action]:
        """An agent became free: give them the best waiting call they can take (their CRM calls first)."""
        out: list[Action] = []
        while self._free(rt, now):
            item, why = self._best_call_for(rt, now, allow_retry)
            if item is None:
                break
            pool = self._pool_of(item)
            cand = self._candidate(rt, pool or Pool(self.queues[item.queue], 0), now,
                                   preferred=item.status == PREFERRED)
            if item.status == QUEUED:
                item.version += 1  # drop its heap entry
            out += self._offer(item, [rt], now, why, (cand,))
        return out

    def _best_call_for(self, rt: AgentRt, now: float, allow_retry: bool = True) -> tuple[Item | None, str]:
        pref = self.preferred.get(rt.id)
        if pref:
            waiting = [it for it in pref.values() if it.status == PREFERRED and it.preferred_until > now]
            if waiting:
                best = min(waiting, key=Item.key)
                return best, f"{rt.id} is the CRM owner and became free"
        best_item: Item | None = None
        fallback: Item | None = None
        for pool in rt.pools:
            heap = pool.waiting
            popped: list[tuple[Any, str, int]] = []
            found: Item | None = None
            while heap and len(popped) < DEEP_SCAN:
                entry = heap[0]
                it = self.items.get(entry[1])
                if it is None or it.version != entry[2] or it.status != QUEUED:
                    heapq.heappop(heap)
                    continue
                if rt.id not in it.tried:
                    found = it
                    break
                popped.append(heapq.heappop(heap))
                if fallback is None or it.key() < fallback.key():
                    fallback = it
            for e in popped:
                heapq.heappush(heap, e)
            if found is not None and (best_item is None or found.key() < best_item.key()):
                best_item = found
        if best_item is None and fallback is not None and allow_retry:
            fallback.tried.clear()
            best_item = fallback
        if best_item is None:
            return None, ""
        return best_item, (f"{rt.id} became free; oldest eligible call at priority {best_item.priority} "
                           f"in {best_item.queue}")

    def _offer(self, item: Item, targets: list[AgentRt], now: float, why: str,
               cands: tuple[Candidate, ...], timeout: float | None = None) -> list[Action]:
        if self.observer is not None:
            self.observer(item, targets, now)  # tests check invariants at the instant of the decision
        q = self.queues[item.queue]
        out: list[Action] = []
        if item.status == PREFERRED and item.owner in self.preferred:
            self.preferred[item.owner].pop(item.call_id, None)
        item.status = OFFERED
        item.version += 1
        item.offered = {a.id for a in targets}
        n = next(self.offer_seq)
        pairs: list[tuple[str, str]] = []
        for rt in targets:
            rt.legs[item.call_id] = "ringing"
            rt.leg_queue[item.call_id] = item.queue
            rt.last_offer[q.name] = n
            self._settle(rt, now, out)
            ep = rt.cfg.endpoints.get(item.provider) or next(iter(rt.cfg.endpoints.values()), rt.id)
            pairs.append((rt.id, ep))
        t = timeout if timeout is not None else q.ring_timeout_s
        self._timer(now + t + self.ring_grace_s, "ring", item.call_id, item.version)
        cb = item.callback
        action = "offer"
        dial_id = None
        if cb is not None:
            cb.state = DIALING
            cb.agent = targets[0].id
            cb.attempts += 1
            dial_id = cb.next_call_id()
            cb.done_call_id = dial_id
            self.alias[dial_id] = item.call_id
            action = "callback_dial"
        d = self._decision(item, now, action, targets[0].id if len(targets) == 1 else None, why, cands)
        out.append(Offer(item.call_id, item.queue, item.provider, item.provider_call_id, tuple(pairs), t, d,
                         cb, dial_id))
        return out

    # ---- call events -------------------------------------------------------------

    def resolve(self, call_id: str) -> Item | None:
        item = self.items.get(call_id)
        if item is None and call_id in self.alias:
            item = self.items.get(self.alias[call_id])
        return item

    def no_answer(self, call_id: str, agent: str, now: float) -> list[Action]:
        """That agent's leg stopped ringing unanswered (or the offer could not be sent)."""
        rt = self.agents.get(agent)
        if rt is None:
            return []
        if self.resolve(call_id) is None:
            return self._external_leg_end(call_id, rt, now)
        return self._leg_no_answer(call_id, rt, now)

    def _leg_no_answer(self, call_id: str, rt: AgentRt, now: float, settle: bool = True) -> list[Action]:
        out: list[Action] = []
        item = self.resolve(call_id)
        real = item.call_id if item else call_id
        if rt.legs.get(real) != "ringing":
            return out
        self._drop_leg(rt, real, out)
        if settle:
            self._settle(rt, now, out)
        if item is None:
            return out
        item.offered.discard(rt.id)
        item.tried.add(rt.id)
        requeued = False
        if item.status == OFFERED and not item.offered:
            if item.callback is not None and item.callback.state == DIALING:
                out += self._callback_attempt_failed(item, now)
            elif item.overflow_due and (q := self.queues.get(item.queue)) is not None:
                item.overflow_due = False
                item.status = QUEUED
                self._push_item(item)
                out += self._overflow(item, q, now, "wait", f"waited {now - item.entered:.0f}s in {q.name}",
                                      try_now=False)
                requeued = item.status == QUEUED
            else:
                out += self._requeue(item, now, try_now=False)
                requeued = True
        # order matters for FIFO: the freed agent first takes the oldest call they have not let ring;
        # then the call that rang out goes to a free agent who has not rung for it; only then may
        # anyone go round again (same agent, same call)
        if settle and self._free(rt, now):
            out += self._try_agent(rt, now, allow_retry=False)
        if requeued and item.status == QUEUED:
            out += self._try_call(item, now)
        if settle and self._free(rt, now):
            out += self._try_agent(rt, now)
        return out

    def _requeue(self, item: Item, now: float, try_now: bool = True) -> list[Action]:
        """Back to waiting after nobody answered: the owner window ends if the owner did not answer."""
        item.status = QUEUED
        if item.owner and item.owner in item.tried:
            item.preferred_until = 0.0
        if item.preferred_until > now and item.owner:
            item.status = PREFERRED
            self.preferred.setdefault(item.owner, {})[item.call_id] = item
            return []
        self._push_item(item)
        return self._try_call(item, now) if try_now else []

    def answered(self, call_id: str, agent: str | None, now: float) -> list[Action]:
        out: list[Action] = []
        item = self.resolve(call_id)
        rt = self.agents.get(agent) if agent else None
        if item is None:
            if rt is not None:
                self._connect_leg(rt, call_id, rt.leg_queue.get(call_id), out)
                self._settle(rt, now, out)
            return out
        if item.status in (CONNECTED, GONE):
            return out
        if rt is None:
            if len(item.offered) != 1:
                return out  # answered by an IVR / the queue itself, or ring-all without a name: not an agent
            rt = self.agents.get(next(iter(item.offered)))
        for other in list(item.offered):
            if rt is None or other != rt.id:
                o = self.agents[other]
                self._drop_leg(o, item.call_id, out)
                self._settle(o, now, out)
                if self._free(o, now):
                    out += self._try_agent(o, now)
        if item.status == PREFERRED and item.owner in self.preferred:
            self.preferred[item.owner].pop(item.call_id, None)
        item.offered = set()
        item.status = CONNECTED
        item.version += 1
        if rt is not None:
            item.agent = rt.id
            self._connect_leg(rt, item.call_id, item.queue, out)
            rt.calls_taken += 1
            self._settle(rt, now, out)
        if item.callback is not None:
            item.callback.state = DONE
        return out

    def ended(self, call_id: str, now: float) -> list[Action]:
        """The call (or the originated callback) ended."""
        out: list[Action] = []
        item = self.resolve(call_id)
        if item is None:
            for rt in self.agents.values():
                if call_id in rt.legs:
                    out += self._external_leg_end(call_id, rt, now)
            return out
        is_dial = call_id != item.call_id
        if item.callback is not None and item.status in (QUEUED, PREFERRED) and not is_dial:
            return out  # the caller hung up after asking for a callback: keep the place
        if is_dial and item.status == OFFERED:
            # the originated callback ended before it was answered
            for a in list(item.offered):
                rt = self.agents[a]
                self._drop_leg(rt, item.call_id, out)
                self._settle(rt, now, out)
            freed = list(item.offered)
            item.offered = set()
            out += self._callback_attempt_failed(item, now)
            for a in freed:
                if self._free(self.agents[a], now):
                    out += self._try_agent(self.agents[a], now)
            return out
        if item.callback is not None and item.status == OFFERED and not is_dial:
            # the caller hung up while an agent was ringing for them: free the agent, keep the place
            freed = list(item.offered)
            for a in freed:
                rt = self.agents[a]
                self._drop_leg(rt, item.call_id, out)
                self._settle(rt, now, out)
            item.offered = set()
            item.status = QUEUED
            self._push_item(item)
            out += self._try_call(item, now)
            for a in freed:
                if self._free(self.agents[a], now):
                    out += self._try_agent(self.agents[a], now)
            return out
        item.status = GONE
        item.version += 1
        if item.owner in self.preferred:
            self.preferred[item.owner].pop(item.call_id, None)
        q = self.queues.get(item.queue)
        for a in list(item.offered) + ([item.agent] if item.agent else []):
            rt = self.agents.get(a)
            if rt is None or item.call_id not in rt.legs:
                continue
            was = self._drop_leg(rt, item.call_id, out)
            wrap = q.wrap_up_s if (q and was == "connected") else 0.0
            self._settle(rt, now, out, wrap_s=wrap, ended=was == "connected")
            if self._free(rt, now):
                out += self._try_agent(rt, now)
        item.offered = set()
        del self.items[item.call_id]
        if item.callback and item.callback.done_call_id:
            self.alias.pop(item.callback.done_call_id, None)
        return out

    def transferred(self, call_id: str, agent: str | None, now: float) -> list[Action]:
        """A blind transfer out frees the agent; the call is no longer ours to route."""
        return self.ended(call_id, now)

    def _external_leg_end(self, call_id: str, rt: AgentRt, now: float) -> list[Action]:
        out: list[Action] = []
        was = self._drop_leg(rt, call_id, out)
        if was is None:
            return out
        self._settle(rt, now, out, ended=was == "connected")
        if self._free(rt, now):
            out += self._try_agent(rt, now)
        return out

    def ringing(self, call_id: str, agent: str, now: float) -> list[Action]:
        """The PBX says this agent's phone rings (ours: already known; a direct call: track it)."""
        rt = self.agents.get(agent)
        if rt is None or self.resolve(call_id) is not None:
            return []
        if call_id in rt.legs:
            return []
        out: list[Action] = []
        rt.legs[call_id] = "ringing"
        rt.leg_queue[call_id] = None
        self._settle(rt, now, out)
        return out

    def offer_failed(self, call_id: str, agent: str, now: float, *, block_s: float = 0.0) -> list[Action]:
        """The Connect/Originate could not be sent, or another node holds the agent (block it a while)."""
        rt = self.agents.get(agent)
        if rt is None:
            return []
        if block_s > 0:
            rt.blocked_until = now + block_s
            self._timer(rt.blocked_until, "unblock", rt.id, 0)
        return self._leg_no_answer(call_id, rt, now)

    # ---- callbacks ---------------------------------------------------------------

    def request_callback(self, call_id: str, number: str, now: float) -> CallbackRequest | None:
        """A waiting caller asks to be called back: they keep their place in the queue."""
        item = self.items.get(call_id)
        if item is None or item.status not in (QUEUED, PREFERRED, OFFERED) or item.callback is not None:
            return None
        item.callback = CallbackRequest(id=f"cb-{call_id}", tenant=item.tenant, queue=item.queue, number=number,
                                        call_id=call_id, requested_at=now, position_at=item.position)
        return item.callback

    def _callback_attempt_failed(self, item: Item, now: float) -> list[Action]:
        cb = item.callback
        assert cb is not None
        if cb.done_call_id:
            self.alias.pop(cb.done_call_id, None)
        if cb.attempts >= CALLBACK_MAX_ATTEMPTS:
            cb.state = FAILED
            item.status = GONE
            self.items.pop(item.call_id, None)
            d = self._decision(item, now, "callback_failed", None, f"callback failed {cb.attempts} times")
            return [Overflow(item.call_id, item.queue, item.provider, item.provider_call_id, "callback_failed",
                             cb.number, d)]
        cb.state = WAITING
        item.status = "retry"
        self._timer(now + CALLBACK_RETRY_S, "cb_retry", item.call_id, 0)
        return []

    # ---- overflow ----------------------------------------------------------------

    def _overflow(self, item: Item, q: QueueConfig, now: float, why: str, text: str,
                  try_now: bool = True) -> list[Action]:
        then = q.then
        if then and then.startswith("queue:"):
            target = self.queues.get(then[len("queue:"):])
            if target is not None and item.hops < MAX_HOPS:
                item.hops += 1
                d = self._decision(item, now, "overflow_queue", None, f"{text}: to queue {target.name}")
                item.queue = target.name
                item.priority = target.priority + item.boost
                item.entered = now
                item.tier = 0
                item.tried.clear()
                out: list[Action] = [Overflow(item.call_id, q.name, item.provider, item.provider_call_id,
                                              "queue", target.name, d)]
                # the caller keeps their place (position) in the new queue
                return out + self._enter_queue(item, target, now, try_now)
        if then == "callback" and why == "wait":
            item.callback_offered = True
            d = self._decision(item, now, "callback_offer", None, text + ": callback offered")
            return [Overflow(item.call_id, q.name, item.provider, item.provider_call_id, "callback_offer",
                             q.callback_prompt, d)]
        item.status = GONE
        item.version += 1
        self.items.pop(item.call_id, None)
        if item.owner in self.preferred:
            self.preferred[item.owner].pop(item.call_id, None)
        d = self._decision(item, now, "overflow_voicemail" if why == "wait" else why, None, text + ": voicemail")
        return [Overflow(item.call_id, q.name, item.provider, item.provider_call_id, "voicemail",
                         q.overflow_target, d)]

    # ---- time ----------------------------------------------------------------------

    def next_timer(self) -> float | None:
        return self.timers[0][0] if self.timers else None

    def advance(self, now: float) -> list[Action]:
        """Fire every timer due at or before `now` (ring timeouts, widen, overflow, wrap-up, callbacks)."""
        out: list[Action] = []
        timers = self.timers
        while timers and timers[0][0] <= now:
            when, _, kind, key, version = heapq.heappop(timers)
            try:
                # timers fire at their exact time (simulations depend on it); 0.0 means "at the next tick"
                out += self._fire(kind, key, version, when if when > 0.0 else now)
            except Exception:  # one bad timer must not stop routing
                log.exception("routing_timer_failed", kind=kind, key=key)
        return out

    def _fire(self, kind: str, key: str, version: int, now: float) -> list[Action]:
        if kind == "wrap":
            rt = self.agents.get(key)
            if rt is None or rt.state is not S.WRAP_UP or rt.wrap_until > now:
                return []
            out: list[Action] = []
            self._set_state(rt, S.AVAILABLE, None, now, out)
            self._touch(rt, now)
            return out + self._try_agent(rt, now)
        if kind == "rematch":
            out = []
            for rt in self.agents.values():
                if self._free(rt, now):
                    out += self._try_agent(rt, now)
            return out
        if kind == "unblock":
            rt = self.agents.get(key)
            if rt is None or rt.blocked_until > now:
                return []
            rt.blocked_until = 0.0
            self._touch(rt, now)
            return self._try_agent(rt, now)
        item = self.items.get(key)
        if item is None:
            return []
        q = self.queues.get(item.queue)
        if q is None:
            if kind != "orphan" or item.status not in (QUEUED, PREFERRED, "retry"):
                return []
            item.status = GONE
            self.items.pop(item.call_id, None)
            if item.owner in self.preferred:
                self.preferred[item.owner].pop(item.call_id, None)
            d = self._decision(item, now, "rejected", None, f"queue {item.queue} was removed by a reconfiguration")
            return [Overflow(item.call_id, item.queue, item.provider, item.provider_call_id, "voicemail", None, d)]
        if kind == "ring":
            if item.status != OFFERED or item.version != version:
                return []
            out = []
            for a in list(item.offered):
                out += self._leg_no_answer(item.call_id, self.agents[a], now)
            return out
        if kind == "preferred":
            if item.status != PREFERRED:
                return []
            item.preferred_until = 0.0
            if item.owner in self.preferred:
                self.preferred[item.owner].pop(item.call_id, None)
            item.status = QUEUED
            self._push_item(item)
            return self._try_call(item, now)
        if kind == "cb_retry":
            if item.status != "retry":
                return []
            item.status = QUEUED
            self._push_item(item)
            return self._try_call(item, now)
        if kind == "widen":
            if item.tier == 1 or (item.queue, 1) not in self.pools or item.entered + (q.widen_after_s or 0) > now:
                return []
            item.tier = 1
            d = self._decision(item, now, "widen", None, f"waited {q.widen_after_s:g}s: requirement widened "
                               f"to {q.widened.source if q.widened else ''}")
            out = [Overflow(item.call_id, q.name, item.provider, item.provider_call_id, "widen", None, d)]
            if item.status == QUEUED:
                self._push_item(item)
                out += self._try_call(item, now)
            return out
        if kind == "then":
            if q.then_after_s is None or item.entered + q.then_after_s > now + 1e-9:
                return []  # stale: the call moved queue since
            if item.callback is not None or (item.callback_offered and q.then == "callback"):
                return []
            if item.status == OFFERED:
                # never pull a call from a ringing agent: overflow the moment that ring ends unanswered
                item.overflow_due = True
                return []
            if item.status not in (QUEUED, PREFERRED):
                return []
            return self._overflow(item, q, now, "wait", f"waited {now - item.entered:.0f}s in {q.name}")
        return []

    # ---- views -------------------------------------------------------------------

    def snapshot(self, now: float) -> dict[str, Any]:
        """Dashboards: per queue (config order) waiting, oldest wait, callbacks, ringing, talking and
        the states of the agents who may take its calls; plus agents per state overall."""
        stats: dict[str, dict[str, Any]] = {}
        for q in self.cfg.queues:
            pool = self.pools[(q.name, 0)]
            stats[q.name] = {"name": q.name, "waiting": 0, "oldest_wait_s": 0.0, "callbacks": 0, "offered": 0,
                             "connected": 0, "agents": {s.value: n for s, n in pool.counts.items()}}
        for it in self.items.values():
            st_ = stats.get(it.queue)
            if st_ is None:
                continue
            if it.status in (QUEUED, PREFERRED, "retry"):
                st_["waiting"] += 1
                st_["oldest_wait_s"] = max(st_["oldest_wait_s"], round(now - it.position, 3))
                if it.callback is not None:
                    st_["callbacks"] += 1
            elif it.status == OFFERED:
                st_["offered"] += 1
            elif it.status == CONNECTED:
                st_["connected"] += 1
        states = {s.value: 0 for s in AgentState}
        for rt in self.agents.values():
            if not rt.retired:
                states[rt.state.value] += 1
        return {"queues": list(stats.values()), "agents": states}

    def agent_view(self, agent: str, now: float) -> dict[str, Any]:
        rt = self.agent(agent)
        return {"agent": rt.id, "state": rt.state.value, "reason": rt.reason, "calls": sorted(rt.legs),
                "capacity": rt.cfg.capacity, "calls_taken": rt.calls_taken,
                "idle_s": round(now - rt.idle_since, 3) if rt.state is S.AVAILABLE else 0.0}

    def free_agents(self, now: float) -> Iterable[AgentRt]:
        return (rt for rt in self.agents.values() if self._free(rt, now))
