"""The ACD runtime: call events in, Connect / Originate commands and agent-state events out.

`Router` wraps the pure `Engine` with the I/O: it consumes normalized
`CallEvent`s (deduped on event_id), reserves agents (so two nodes never offer
one agent two calls), sends commands to adapters through `dispatch`, publishes
`agent_state_changed` events and keeps each call's decisions for
`decisions_for` (and hands them to `record_decision`, e.g. to the
`routing_decisions` table).

Wiring (the app does it):

    router = Router(settings, clock=clock, dispatch=control.dispatch,
                    reservations=RedisReservations(redis), publish_event=bus_publish)
    ... await router.on_event(event)        # for every call event
    ... await router.run()                  # owned task: timers (ring timeout, overflow, wrap-up)
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from cti.adapters.base import BlindTransfer, CallNotFound, Command, CommandResult, Connect, Originate, Play
from cti.config import ConfigError, Settings
from cti.model import AgentState, CallEvent, EventKind, make_event_id
from cti.recent import RecentIds
from cti.routing.callbacks import CallbackRequest
from cti.routing.decision import Decision
from cti.routing.engine import (
    Action,
    CallIn,
    Engine,
    LegConnected,
    LegEnded,
    Offer,
    Overflow,
    StateChange,
)
from cti.routing.queues import compile_routing, resolve_queue
from cti.routing.reservations import Free, Hold
from cti.routing.rules import contact_env, flatten

log = structlog.get_logger("cti.routing")

Dispatch = Callable[[str, Command], Awaitable[CommandResult]]
Lookup = Callable[[CallEvent], Awaitable[Any]]

SEEN_EVENTS_MAX = 100_000   # duplicate filter: the ids of the last events (a redelivery is seconds late)
SEEN_EVENTS_TTL_S = 120.0   # ...and no older than this, so memory plateaus within two minutes at any rate
DECISIONS_CALLS_MAX = 1_000  # recent calls' decisions in memory (the API reads them from the store)
RESERVE_GRACE_S = 10.0      # reservation TTL beyond the ring timeout
ON_CALL_TTL_S = 300.0       # reservation TTL while the agent talks: refreshed every REFRESH_S, released
REFRESH_S = 60.0            # when the leg ends, so a crashed node frees its agents within minutes
RESERVATION_CHUNK = 500     # reservations per pipelined round trip (refresh, replayed releases)
BLOCK_S = 5.0               # an agent another node holds is not offered again for this long
UNREACHABLE_BLOCK_S = 1.0   # an agent whose reservation could not be checked (Redis down) is retried after this


@dataclass
class _Outbox:
    commands: list[tuple[Offer | Overflow, str, Command]] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    states: list[CallEvent] = field(default_factory=list)  # agent_state_changed, published under the lock
    # releases and on-call holds not sent yet: they go out with the next offer's holds, which
    # must see them (in order), or when the batch is done
    deferred: list[Hold | Free] = field(default_factory=list)


class Router:
    def __init__(self, settings: Settings, *, clock: Any, dispatch: Dispatch, reservations: Any,
                 publish_event: Callable[[CallEvent], Any] | None = None,
                 publish_events: Callable[[list[CallEvent]], Any] | None = None,
                 record_decision: Callable[[Decision], Any] | None = None,
                 lookup: Lookup | None = None, tick_s: float = 0.5, ring_grace_s: float = 3.0,
                 lookup_timeout_s: float = 0.5, node_id: str | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self._dispatch = dispatch
        self.reservations = reservations
        self._publish = publish_event
        self._publish_many = publish_events
        self._record = record_decision
        self._lookup = lookup
        self.lookup_timeout_s = lookup_timeout_s
        self.node_id = node_id or uuid.uuid4().hex[:12]
        self.tick_s = tick_s
        self.engine = Engine(compile_routing(settings), ring_grace_s=ring_grace_s)
        self._seen = RecentIds(SEEN_EVENTS_TTL_S, SEEN_EVENTS_MAX, self.clock.monotonic)
        self._decisions: OrderedDict[str, list[Decision]] = OrderedDict()
        self._lock = asyncio.Lock()
        self._refreshed_at = 0.0
        # releases that failed because the store was unreachable, replayed by tick(): dropping
        # one would leave its agent held for minutes. (A failed on-call reserve needs no list:
        # it makes the periodic refresh of every connected leg due at once.)
        self._unreleased: set[tuple[str, str]] = set()

    # ---- time --------------------------------------------------------------------

    def _now(self) -> float:
        return self.clock.now().timestamp()

    # ---- configuration -----------------------------------------------------------

    def reconfigure(self, new_settings: Settings) -> None:
        """Swap queues/skills/strategies/rules atomically, or raise ConfigError and keep the running ones.

        Agents keep their states and calls; waiting calls keep their place.
        """
        cfg = compile_routing(new_settings)  # raises ConfigError listing every problem
        old = self.engine.cfg
        try:
            self.engine.reconfigure(cfg)
        except Exception as exc:  # pragma: no cover - defensive: put the old one back
            self.engine.reconfigure(old)
            raise ConfigError(f"routing reconfiguration failed: {exc}") from exc
        self.settings = new_settings
        log.info("routing_reconfigured", queues=len(cfg.queues), agents=len(cfg.agents), rules=len(cfg.rules))

    # ---- events ------------------------------------------------------------------

    def _first_time(self, event_id: str) -> bool:
        return self._seen.add(event_id)

    async def on_event(self, ev: CallEvent) -> None:
        """Consume one normalized call event; never raises for a bad event (logs it)."""
        await self.on_events([ev])

    async def on_events(self, events: list[CallEvent]) -> None:
        """Consume a batch of events in order; never raises for a bad event (logs it).

        One lock, one state publish and one send for the whole batch: done per event, the
        round trips (not the decisions, which take microseconds) set the routing rate.
        """
        fresh = [ev for ev in events if self._first_time(ev.event_id)]
        if not fresh:
            return
        # the callers' CRM records, side by side: one after the other, each lookup costs at least
        # a loop cycle, and on a saturated node that set how many calls a batch could route
        queued = [ev for ev in fresh if ev.kind is EventKind.QUEUED]
        found = await asyncio.gather(*(self._contact_for(ev) for ev in queued), return_exceptions=True)
        contacts: dict[str, tuple[dict[str, Any] | None, str | None]] = {}
        for ev, res in zip(queued, found, strict=True):
            if isinstance(res, BaseException):
                if isinstance(res, asyncio.CancelledError):
                    raise res
                log.error("routing_event_failed", call_id=ev.call_id, kind=str(ev.kind), event_id=ev.event_id,
                          error=repr(res)[:300])
            else:
                contacts[ev.event_id] = res
        box = _Outbox()
        async with self._lock:
            for ev in fresh:
                try:
                    contact, owner = contacts.get(ev.event_id, (None, None))
                    await self._carry_out(self._handle(ev, contact, owner), box)
                except Exception:
                    log.exception("routing_event_failed", call_id=ev.call_id, kind=str(ev.kind), event_id=ev.event_id)
            await self._flush_deferred(box.deferred, [])
            await self._flush_states(box)
        await self._send(box)

    async def _contact_for(self, ev: CallEvent) -> tuple[dict[str, Any] | None, str | None]:
        data = ev.data or {}
        raw = data.get("contact")
        owner = data.get("owner")
        if raw is None and self._lookup is not None:
            try:
                # the caller must not wait on a slow CRM: past the timeout the call routes without it
                raw = await asyncio.wait_for(self._lookup(ev), self.lookup_timeout_s)
            except TimeoutError:
                log.warning("routing_lookup_timeout", call_id=ev.call_id, timeout_s=self.lookup_timeout_s)
            except Exception:
                log.warning("routing_lookup_failed", call_id=ev.call_id, exc_info=True)
        if raw is None:
            return None, owner
        if isinstance(raw, dict):
            env = flatten(raw)
            owner = owner or env.get("owner") or env.get("contact.owner")
        else:  # a cti.model.Contact
            env = contact_env(raw)
            owner = owner or getattr(raw, "owner", None)
        return env, owner

    def _handle(self, ev: CallEvent, contact: dict[str, Any] | None, owner: str | None) -> list[Action]:
        e = self.engine
        now = self._now()
        k = ev.kind
        if k is EventKind.QUEUED:
            queue = resolve_queue(e.cfg, queue=ev.queue, to_number=ev.to_number, data=ev.data)
            if queue is None:
                log.warning("routing_no_queue", call_id=ev.call_id, queue=ev.queue, to_number=ev.to_number)
                return []
            return e.enqueue(CallIn(ev.call_id, queue, ev.provider, ev.provider_call_id, ev.tenant,
                                    ev.from_number, contact, owner), now)
        if k is EventKind.RINGING and ev.agent:
            return e.ringing(ev.call_id, ev.agent, now)
        if k is EventKind.NO_ANSWER and ev.agent:
            return e.no_answer(ev.call_id, ev.agent, now)
        if k is EventKind.ANSWERED:
            return e.answered(ev.call_id, ev.agent, now)
        if k is EventKind.ENDED:
            return e.ended(ev.call_id, now)
        if k is EventKind.TRANSFERRED:
            return e.transferred(ev.call_id, ev.agent, now)
        if k is EventKind.AGENT_STATE_CHANGED:
            return self._remote_state(ev, now)
        if k is EventKind.DTMF and str((ev.data or {}).get("digits", "")).startswith("1"):
            item = e.items.get(ev.call_id)
            if item is not None and item.callback_offered:
                self._callback(ev.call_id, ev.from_number or item.from_number, now)
        return []

    def _remote_state(self, ev: CallEvent, now: float) -> list[Action]:
        """Another node changed an agent's state (our own events come back from the bus: ignored)."""
        data = ev.data or {}
        if data.get("node") in (None, self.node_id) or not ev.agent:
            return []
        try:
            state = AgentState(data.get("state"))
        except ValueError:
            log.warning("routing_bad_agent_state_event", event_id=ev.event_id, state=data.get("state"))
            return []
        return self.engine.remote_state(ev.agent, state, data.get("reason"), now)

    def _callback(self, call_id: str, number: str | None, now: float) -> CallbackRequest | None:
        if not number:
            log.warning("routing_callback_without_number", call_id=call_id)
            return None
        cb = self.engine.request_callback(call_id, number, now)
        if cb is not None:
            log.info("routing_callback_requested", call_id=call_id, queue=cb.queue)
        return cb

    async def request_callback(self, call_id: str, number: str | None = None) -> CallbackRequest | None:
        """A waiting caller (or the agent panel/IVR on their behalf) asks to be called back."""
        async with self._lock:
            item = self.engine.items.get(call_id)
            return self._callback(call_id, number or (item.from_number if item else None), self._now())

    # ---- agents ------------------------------------------------------------------

    async def set_agent_state(self, agent: str, state: AgentState | str, reason: str | None = None) -> AgentState:
        """API / panel request. Raises UnknownAgent (404), InvalidTransition (409), ValueError (400)."""
        async with self._lock:
            actions = self.engine.set_agent_state(agent, state, reason, self._now())
            commands = await self._carry_out(actions)
        await self._send(commands)
        return self.engine.agents[agent].state

    async def end_wrap_up(self, agent: str) -> AgentState:
        """The agent finished after-call work (disposition saved): available now, if still wrapping up."""
        rt = self.engine.agent(agent)
        if rt.state is AgentState.WRAP_UP:
            return await self.set_agent_state(agent, AgentState.AVAILABLE)
        return rt.state

    def agent_state(self, agent: str) -> dict[str, Any]:
        return self.engine.agent_view(agent, self._now())

    def agents(self) -> list[dict[str, Any]]:
        now = self._now()
        return [self.engine.agent_view(a, now) for a, rt in self.engine.agents.items() if not rt.retired]

    # ---- time-driven work ----------------------------------------------------------

    async def tick(self) -> None:
        """Fire due timers: ring timeouts, widening, overflow, wrap-up ends, callback retries."""
        async with self._lock:
            now = self._now()
            actions = self.engine.advance(now)
            commands = await self._carry_out(actions)
            if self._unreleased:
                await self._replay_releases()
            if now - self._refreshed_at >= REFRESH_S:
                # a refresh that could not finish (store unreachable) is due again next tick
                self._refreshed_at = now if await self._refresh_reservations() else 0.0
        await self._send(commands)

    async def _refresh_reservations(self) -> bool:
        """Keep the reservations of agents on calls alive (they expire if this node dies), in
        pipelined chunks. False when the store could not be reached."""
        holds = [Hold(rt.id, call_id, rt.cfg.capacity, ON_CALL_TTL_S)
                 for rt in self.engine.agents.values() for call_id, kind in rt.legs.items() if kind == "connected"]
        for i in range(0, len(holds), RESERVATION_CHUNK):
            try:
                await self.reservations.apply(holds[i:i + RESERVATION_CHUNK])
            except Exception as exc:
                log.warning("routing_reservation_refresh_failed", legs=len(holds), error=repr(exc)[:200])
                return False
        return True

    async def _replay_releases(self) -> None:
        pairs = list(self._unreleased)
        try:
            for i in range(0, len(pairs), RESERVATION_CHUNK):
                chunk = pairs[i:i + RESERVATION_CHUNK]
                await self.reservations.apply([Free(agent, call_id) for agent, call_id in chunk])
                self._unreleased.difference_update(chunk)
        except Exception:
            return  # still unreachable: keep the rest for the next tick
        log.info("routing_reservations_resynced")

    async def _apply(self, ops: list[Hold | Free]) -> list[bool] | None:
        """The reservation store's answers, in order, or None when it cannot be reached."""
        try:
            return await self.reservations.apply(ops)
        except Exception as exc:
            log.warning("routing_reservations_unreachable", ops=len(ops), error=repr(exc)[:200])
            return None

    async def _flush_deferred(self, deferred: list[Hold | Free], extra: list[Hold]) -> list[bool] | None:
        """Send the held-back releases and on-call holds together with `extra` (an offer's
        holds) in one round trip, in order; returns the answers to `extra` (None: unreachable)."""
        if not deferred and not extra:
            return []
        res = await self._apply([*deferred, *extra])
        for op in deferred:
            if isinstance(op, Free):
                if res is None:
                    self._unreleased.add((op.agent, op.call_id))
                else:
                    self._unreleased.discard((op.agent, op.call_id))
            elif res is None:
                self._refreshed_at = 0.0  # re-reserve every connected leg on the next tick
        deferred.clear()
        return None if res is None else res[len(res) - len(extra):]

    async def run(self) -> None:
        """Timer loop for an owned task (cancel it to stop)."""
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("routing_tick_failed")
            nxt = self.engine.next_timer()
            wait = self.tick_s if nxt is None else min(self.tick_s, max(0.0, nxt - self._now()))
            await self.clock.sleep(max(wait, 0.01))

    # ---- carrying out actions --------------------------------------------------------

    async def _carry_out(self, actions: list[Action], into: _Outbox | None = None) -> _Outbox:
        """Reserve agents (under the lock); collect state changes, commands and decisions.

        Without `into`, the state changes are published before returning (still under the lock,
        so agents' states reach the bus in the order they happened)."""
        box = into if into is not None else _Outbox()
        commands = box.commands
        pending = list(actions)
        # one round trip per offer (or per batch), not one per leg: see _Outbox.deferred
        deferred = box.deferred
        while pending:
            act = pending.pop(0)
            if isinstance(act, StateChange):
                if not act.remote:
                    box.states.append(self._state_event(act))
            elif isinstance(act, LegEnded):
                deferred.append(Free(act.agent, act.call_id))
            elif isinstance(act, LegConnected):
                rt = self.engine.agents.get(act.agent)
                deferred.append(Hold(act.agent, act.call_id, rt.cfg.capacity if rt else 1, ON_CALL_TTL_S))
            elif isinstance(act, Offer):
                box.decisions.append(act.decision)
                self._keep(act.decision)
                targets = []
                holds = [Hold(agent, act.call_id, self.engine.agents[agent].cfg.capacity,
                              act.timeout_s + RESERVE_GRACE_S) for agent, _ in act.targets]
                answers = await self._flush_deferred(deferred, holds)
                for (agent, ep), ok in zip(act.targets, answers or [None] * len(holds), strict=True):
                    if ok:
                        targets.append((agent, ep))
                    elif ok is None:
                        # cannot tell whether another node holds them: not now, again shortly; the
                        # call goes back to waiting (never offered unguarded, never forgotten)
                        pending.extend(self.engine.offer_failed(act.dial_call_id or act.call_id, agent,
                                                                self._now(), block_s=UNREACHABLE_BLOCK_S))
                    else:
                        log.info("routing_agent_held_elsewhere", call_id=act.call_id, agent=agent)
                        pending.extend(self.engine.offer_failed(act.dial_call_id or act.call_id, agent,
                                                                self._now(), block_s=BLOCK_S))
                if not targets:
                    continue
                if act.callback is not None and act.dial_call_id:
                    agent, ep = targets[0]
                    cmd: Command = Originate(agent_endpoint=ep, to_number=act.callback.number,
                                             call_id=act.dial_call_id, agent=agent,
                                             timeout_s=int(act.timeout_s))
                else:
                    cmd = Connect(act.provider_call_id, tuple(targets), act.timeout_s)
                commands.append((act, act.provider, cmd))
            elif isinstance(act, Overflow):
                box.decisions.append(act.decision)
                self._keep(act.decision)
                if act.kind == "voicemail":
                    if act.target:
                        commands.append((act, act.provider, BlindTransfer(act.provider_call_id, act.target)))
                    else:
                        log.warning("routing_voicemail_without_target", call_id=act.call_id, queue=act.queue)
                elif act.kind == "callback_offer" and act.target:
                    commands.append((act, act.provider, Play(act.provider_call_id, act.target)))
                else:
                    log.info("routing_overflow", call_id=act.call_id, queue=act.queue, kind=act.kind)
        if into is None:
            await self._flush_deferred(deferred, [])
            await self._flush_states(box)
        return box

    async def _send(self, box: _Outbox) -> None:
        """Send commands and record decisions outside the lock: slow I/O must not stall routing."""
        if self._record is not None:
            for d in box.decisions:
                try:
                    res = self._record(d)
                    if inspect.isawaitable(res):
                        await res
                except Exception:
                    log.exception("routing_record_failed", call_id=d.call_id)
        for act, provider, cmd in box.commands:
            gone = False
            try:
                res = await self._dispatch(provider, cmd)
                ok = res is None or getattr(res, "ok", True)
                err = None if ok else f"result not ok: {getattr(res, 'detail', '')}"
            except Exception as exc:
                ok, err = False, f"{type(exc).__name__}: {exc}"
                gone = isinstance(exc, CallNotFound)
            if ok:
                continue
            log.warning("routing_command_failed", call_id=act.call_id, command=cmd.name, error=err)
            if isinstance(act, Offer):
                async with self._lock:
                    actions: list[Action] = []
                    if gone and act.callback is None:
                        # the caller hung up (its ended event is still on the way): offering the
                        # same dead call to the next agent, and the next, would spin through them all
                        actions += self.engine.ended(act.call_id, self._now())
                    else:
                        for agent, _ in act.targets:
                            actions += self.engine.offer_failed(act.dial_call_id or act.call_id, agent, self._now())
                    more = await self._carry_out(actions)
                await self._send(more)

    def _state_event(self, sc: StateChange) -> CallEvent:
        at = datetime.fromtimestamp(sc.at, UTC)
        return CallEvent(
            event_id=make_event_id("cti", "agent_state", sc.agent, repr(sc.at), sc.previous, sc.state),
            # an agent-scoped id (not ""): stream consumers that require a call_id accept it
            provider="cti", provider_call_id="", call_id=f"agent:{sc.agent}", kind=EventKind.AGENT_STATE_CHANGED,
            occurred_at=at, tenant=self.engine.cfg.tenant, agent=sc.agent,
            data={"state": sc.state.value, "reason": sc.reason, "previous": sc.previous.value,
                  "node": self.node_id},
        )

    async def _flush_states(self, box: _Outbox) -> None:
        """Publish the collected agent_state_changed events: one bus round trip when it can batch."""
        states, box.states = box.states, []
        if not states:
            return
        try:
            if self._publish_many is not None:
                res = self._publish_many(states)
                if inspect.isawaitable(res):
                    await res
                return
            if self._publish is None:
                return
            for ev in states:
                res = self._publish(ev)
                if inspect.isawaitable(res):
                    await res
        except Exception:
            log.exception("routing_publish_failed", agents=sorted({ev.agent or "" for ev in states}))

    def _keep(self, d: Decision) -> None:
        lst = self._decisions.get(d.call_id)
        if lst is None:
            lst = self._decisions[d.call_id] = []
            if len(self._decisions) > DECISIONS_CALLS_MAX:
                self._decisions.popitem(last=False)
        lst.append(d)
        log.info("routing_decision", call_id=d.call_id, queue=d.queue, action=d.action, chosen=d.chosen,
                 reason=d.reason)

    # ---- views -------------------------------------------------------------------

    def decisions_for(self, call_id: str) -> list[Decision]:
        return list(self._decisions.get(call_id, ()))

    def snapshot(self) -> dict[str, Any]:
        """Dashboards: waiting per queue, oldest wait, agents per state."""
        now = self._now()
        snap = self.engine.snapshot(now)
        snap["at"] = datetime.fromtimestamp(now, UTC).isoformat()
        return snap


def crm_lookup(cached: Any) -> Lookup:
    """A Router `lookup` over the CRM cache (`cti.crm.cache.CachedLookup`): the caller's first match."""

    async def lookup(ev: CallEvent) -> Any:
        number = ev.from_number
        if not number:
            return None
        matches = await cached.lookup(number)
        return matches[0] if matches else None

    return lookup
