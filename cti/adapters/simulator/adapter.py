"""A simulated PBX on an injectable clock.

It behaves like a real provider so the rest of the system cannot tell the
difference: customers dial queue numbers (Poisson arrivals per queue), wait
with a limited patience, are rung to whichever agents our router names in a
`Connect`, talk, get held and transferred, hang up; agents dial customers who
answer, are busy or do not pick up. It only plays the PBX and the humans around
it: which agent gets a call is always the router's decision.

All waiting goes through `clock.sleep()`, so with `ScaledClock` it runs faster
than real time (`cti demo`) and with `ManualClock` a test drives it in
milliseconds. Randomness comes from one `random.Random(seed)`.

Behaviour is a set of timers (`_after`): each one re-checks the call's state
when it fires, so a timer made stale by a command (an answer, a hangup) simply
does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

import structlog

from cti.adapters.base import (
    AdapterContext,
    AdapterError,
    Answer,
    AttendedTransfer,
    BlindTransfer,
    CallNotFound,
    Capability,
    Command,
    CommandResult,
    Connect,
    Hangup,
    Hold,
    Monitor,
    Originate,
    Play,
    Record,
    SendDtmf,
    Unhold,
    VoicemailDrop,
    check_capability,
    register,
)
from cti.adapters.simulator.options import SimOptions, draw, to_e164
from cti.clock import SystemClock
from cti.model import CallEvent, Direction, EndCause, EventKind, make_call_id, make_event_id

log = structlog.get_logger(__name__)

_DTMF = set("0123456789*#ABCD")
_MONITOR_MODES = ("listen", "whisper", "barge", "takeover")
_STOP = object()

# call states inside the simulator (finer than CallState: "dialing" is an outbound call
# whose callee has not picked up yet; "voicemail" a dropped message playing)
QUEUED, RINGING, DIALING, ANSWERED, HELD, VOICEMAIL = (
    "queued", "ringing", "dialing", "answered", "held", "voicemail")
_TALKING = (ANSWERED, HELD)


def _is_voicemail(target: str) -> bool:
    """`voicemail`, `voicemail:<box>`: the PBX's mailbox rather than a phone."""
    return target == "voicemail" or target.startswith("voicemail:")


@dataclass
class SimCall:
    """A live call as the simulated PBX sees it (mutable, private to the adapter)."""

    pcid: str
    call_id: str
    direction: Direction
    from_number: str
    to_number: str
    queue: str | None
    state: str
    agent: str | None = None
    seq: int = 0
    token: int = 0                     # bumped when pending timers of this call become stale
    ringing: dict[str, str] = field(default_factory=dict)   # agent -> endpoint ringing now
    sim_held: bool = False
    recording: str | None = None
    rec_state: str | None = None       # recording | paused | stopped
    monitors: dict[str, tuple[str, str]] = field(default_factory=dict)  # session -> (mode, supervisor)
    consult: str | None = None
    answered_mono: float | None = None


@register("simulator")
class SimulatorAdapter:
    """PBX simulator; see the module docstring and `SimOptions` for the options."""

    type: ClassVar[str] = "simulator"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)

    def __init__(self, settings: Any, ctx: AdapterContext) -> None:
        self.name: str = settings.name
        self.tenant: str = ctx.tenant
        self._ctx = ctx
        self._clock = ctx.clock or SystemClock()
        try:
            self.opts = SimOptions.parse(settings.options, ctx.default_region)
        except ValueError as exc:
            raise AdapterError(f"provider {self.name!r}: {exc}") from None
        self._rng = random.Random(self.opts.seed)
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._calls: dict[str, SimCall] = {}
        self._busy: dict[str, str] = {}            # agent -> provider call id they talk on
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = False
        self.calls_started = 0                     # inbound arrivals + outbound dials, for summaries
        self._ids = itertools.count(1)
        self._sessions = itertools.count(1)
        self._recording_files = itertools.cycle(self.opts.recording_files or ("",))
        # a run prefix keeps provider call ids unique across runs on one database
        self._prefix = f"sim{int(self._clock.now().timestamp())}"
        # queue -> the numbers that enter it (E.164 first: that is what customers dial)
        self._queue_numbers: dict[str, list[str]] = {}
        for number, queue in ctx.queue_numbers.items():
            self._queue_numbers.setdefault(queue, []).append(number)
        for numbers in self._queue_numbers.values():
            numbers.sort(key=lambda n: (not n.startswith("+"), n))
        self._agent_endpoint: dict[str, str] = {}
        for endpoint, agent in ctx.agent_endpoints.items():
            self._agent_endpoint.setdefault(agent, endpoint)

    # ---- lifecycle ----------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._running

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        for queue in sorted(self._queue_numbers):
            rate = self.opts.rate_for(queue)
            if rate > 0:
                self._spawn(self._arrivals(queue, rate))
        per_hour = self.opts.outbound_per_agent_per_hour
        if per_hour > 0 and self._agent_endpoint:
            self._spawn(self._outbound_loop(per_hour))
        log.info("simulator_started", provider=self.name, queues=sorted(self._queue_numbers),
                 agents=len(self._agent_endpoint))
        await asyncio.sleep(0)  # let the loops start their first sleep (matters on a ManualClock)

    async def stop(self) -> None:
        self._running = False
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._queue.put_nowait(_STOP)
        log.info("simulator_stopped", provider=self.name, live_calls=len(self._calls))

    async def events(self) -> AsyncIterator[CallEvent]:
        while True:
            item = await self._queue.get()
            if item is _STOP:
                return
            yield item

    def live_calls(self) -> list[str]:
        """Provider call ids of the calls in progress."""
        return list(self._calls)

    # ---- timers -------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _after(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        # the deadline is fixed now: a task that starts late still fires on time
        self._spawn(self._timer(self._clock.monotonic() + delay, fn, args))

    async def _timer(self, due: float, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        await self._clock.sleep(max(0.0, due - self._clock.monotonic()))
        if not self._running:
            return
        try:
            fn(*args)
        except Exception:  # one bad timer must never stop the simulation
            log.exception("simulator_timer_failed", action=getattr(fn, "__name__", "?"))

    def _live(self, pcid: str, token: int) -> SimCall | None:
        """The call if it still exists and the timer that asks is not stale."""
        c = self._calls.get(pcid)
        return c if c is not None and c.token == token else None

    # ---- emitting -----------------------------------------------------------------

    def _emit(self, c: SimCall, kind: EventKind, *, agent: str | bool | None = True,
              data: dict[str, Any] | None = None) -> None:
        """Queue one event of call `c` (agent=True: the call's current agent)."""
        c.seq += 1
        self._queue.put_nowait(CallEvent(
            event_id=make_event_id(self.name, c.pcid, c.seq),
            provider=self.name,
            provider_call_id=c.pcid,
            call_id=c.call_id,
            kind=kind,
            occurred_at=self._clock.now(),
            seq=c.seq,
            tenant=self.tenant,
            agent=c.agent if agent is True else (agent or None),  # type: ignore[arg-type]
            queue=c.queue,
            direction=c.direction,
            from_number=c.from_number,
            to_number=c.to_number,
            data=data or {},
        ))

    def _new_pcid(self) -> str:
        self.calls_started += 1
        return f"{self._prefix}-{next(self._ids):06d}"

    # ---- simulated customers: inbound -----------------------------------------------

    async def _arrivals(self, queue: str, rate_per_min: float) -> None:
        # arrival times are drawn on the clock, not as sleeps in a row: a busy event loop
        # wakes each sleep late, and the late wake-ups would otherwise lower the rate
        due = self._clock.now()
        while True:
            due += timedelta(seconds=self._rng.expovariate(rate_per_min / 60.0))
            delay = (due - self._clock.now()).total_seconds()
            if delay > 0:
                await self._clock.sleep(delay)
            else:
                await asyncio.sleep(0)  # catching up: still let the loop breathe between calls
            try:
                self.inject_call(queue=queue)
            except Exception:
                log.exception("simulator_arrival_failed", queue=queue)

    def _draw_caller(self) -> str:
        customers = self.opts.customer_numbers
        if customers and self._rng.random() >= self.opts.unknown_caller_ratio:
            return self._rng.choice(customers)
        # an unknown French mobile, never one of the customers'
        while True:
            number = f"+336{self._rng.randrange(10**8):08d}"
            if number not in customers:
                return number

    def inject_call(self, from_number: str | None = None, to_number: str | None = None,
                    queue: str | None = None, patience_s: float | None = None) -> str:
        """A customer dials in: emits created + queued and starts their patience.

        `to_number` (a queue number) or `queue` pick the queue (default: a random one);
        `from_number` defaults to a drawn customer; `patience_s` defaults to an
        exponential draw around the `patience_s` option (float('inf'): waits forever).
        Returns the provider call id. Call it from the event loop.
        """
        if to_number is not None:
            queue = self._queue_for(to_number)
            if queue is None:
                raise ValueError(f"{to_number!r} is not a queue number of provider {self.name!r}")
        elif queue is not None:
            numbers = self._queue_numbers.get(queue)
            if not numbers:
                raise ValueError(f"queue {queue!r} has no number on provider {self.name!r}")
            to_number = numbers[0]
        elif self._queue_numbers:
            queue = self._rng.choice(sorted(self._queue_numbers))
            to_number = self._queue_numbers[queue][0]
        else:
            raise ValueError(f"provider {self.name!r} knows no queue numbers (AdapterContext.queue_numbers)")
        caller = to_e164(from_number, self._ctx.default_region) if from_number else self._draw_caller()
        pcid = self._new_pcid()
        c = SimCall(pcid=pcid, call_id=make_call_id(self.tenant, self.name, pcid),
                    direction=Direction.INBOUND, from_number=caller,
                    to_number=self._e164_or_raw(to_number), queue=queue, state=QUEUED)
        self._calls[pcid] = c
        self._emit(c, EventKind.CREATED, agent=None)
        self._emit(c, EventKind.QUEUED, agent=None)
        if self.opts.dtmf_probability and self._rng.random() < self.opts.dtmf_probability:
            self._emit(c, EventKind.DTMF, agent=None, data={"digit": str(self._rng.randint(1, 3))})
        if patience_s is None:
            patience_s = self._rng.expovariate(1.0 / self.opts.patience_s) if self.opts.patience_s else 0.0
        if patience_s != float("inf"):
            self._after(patience_s, self._caller_gives_up, pcid)
        log.debug("simulator_call_arrived", provider_call_id=pcid, queue=queue)
        return pcid

    async def dial_in(self, from_number: str | None = None, to_number: str | None = None,
                      queue: str | None = None, patience_s: float | None = None) -> str:
        """`inject_call`, then one loop turn so its patience timer is registered with the
        clock before the caller advances a ManualClock."""
        pcid = self.inject_call(from_number, to_number, queue, patience_s)
        await asyncio.sleep(0)
        return pcid

    def _queue_for(self, number: str) -> str | None:
        q = self._ctx.queue_numbers.get(number)
        if q is None:
            with contextlib.suppress(ValueError):
                q = self._ctx.queue_numbers.get(to_e164(number, self._ctx.default_region))
        return q

    def _e164_or_raw(self, number: str) -> str:
        try:
            return to_e164(number, self._ctx.default_region)
        except ValueError:
            return number  # an extension: kept as dialled

    def _caller_gives_up(self, pcid: str) -> None:
        c = self._calls.get(pcid)
        if c is None or c.state not in (QUEUED, RINGING):
            return
        self._end(c, EndCause.CALLER_HANGUP, ring_reason="caller_hangup")

    # ---- ringing agents -----------------------------------------------------------

    def _connect(self, cmd: Connect) -> CommandResult:
        c = self._call(cmd.provider_call_id)
        if c.state != QUEUED:
            raise AdapterError(f"call {c.pcid} is {c.state}, not waiting: cannot connect it")
        if not cmd.targets:
            raise AdapterError("connect needs at least one target")
        c.state = RINGING
        c.token += 1
        c.ringing = {agent: endpoint for agent, endpoint in cmd.targets}
        for agent, endpoint in cmd.targets:
            self._emit(c, EventKind.RINGING, agent=agent, data={"endpoint": endpoint})
        token = c.token
        self._after(cmd.timeout_s, self._ring_timeout, c.pcid, token)
        if self.opts.auto_answer:
            for agent, _ in cmd.targets:
                if agent in self._busy or self._rng.random() >= self.opts.answer_probability:
                    continue
                delay = draw(self._rng, self.opts.answer_delay_s)
                if delay < cmd.timeout_s:
                    self._after(delay, self._agent_picks_up, c.pcid, token, agent)
        return CommandResult(provider_call_id=c.pcid)

    def _ring_timeout(self, pcid: str, token: int) -> None:
        c = self._live(pcid, token)
        if c is None or c.state != RINGING:
            return
        for agent in c.ringing:
            self._emit(c, EventKind.NO_ANSWER, agent=agent, data={"reason": "timeout"})
        c.ringing = {}
        c.state = QUEUED  # back to waiting: the router may connect it again
        c.token += 1

    def _agent_picks_up(self, pcid: str, token: int, agent: str) -> None:
        c = self._live(pcid, token)
        if c is None or c.state != RINGING or agent not in c.ringing or agent in self._busy:
            return
        self._answer_inbound(c, agent)

    def _answer(self, cmd: Answer) -> CommandResult:
        c = self._call(cmd.provider_call_id)
        if c.state != RINGING:
            raise AdapterError(f"call {c.pcid} is {c.state}, not ringing: cannot answer it")
        if cmd.agent not in c.ringing:
            raise AdapterError(f"call {c.pcid} is not ringing agent {cmd.agent!r}")
        self._answer_inbound(c, cmd.agent)
        return CommandResult(provider_call_id=c.pcid)

    def _answer_inbound(self, c: SimCall, agent: str) -> None:
        others = [a for a in c.ringing if a != agent]
        c.ringing = {}
        c.token += 1
        c.state = ANSWERED
        c.agent = agent
        c.answered_mono = self._clock.monotonic()
        self._busy[agent] = c.pcid
        self._emit(c, EventKind.ANSWERED)
        for other in others:
            self._emit(c, EventKind.NO_ANSWER, agent=other, data={"reason": "answered_elsewhere"})
        self._conversation(c)

    # ---- simulated conversations --------------------------------------------------

    def _conversation(self, c: SimCall) -> None:
        """Plan what the simulated people do once connected: hold, transfer, hang up."""
        if self.opts.record:
            self._start_recording(c)
        talk = draw(self._rng, self.opts.talk_time_s)
        token = c.token
        if self.opts.auto_answer:  # agents are simulated too: they hold and transfer
            if self._rng.random() < self.opts.hold_probability:
                at = talk * self._rng.uniform(0.2, 0.6)
                hold = draw(self._rng, self.opts.hold_time_s)
                self._after(at, self._sim_hold, c.pcid, token)
                self._after(at + hold, self._sim_resume, c.pcid, token)
                talk += hold
            if c.direction is Direction.INBOUND and self._rng.random() < self.opts.transfer_probability:
                target = self._transfer_target(c)
                if target:
                    self._after(talk * self._rng.uniform(0.3, 0.8), self._sim_transfer, c.pcid, token, target)
        if self.opts.auto_hangup:
            self._after(talk, self._customer_hangs_up, c.pcid, token)

    def _transfer_target(self, c: SimCall) -> str | None:
        if self.opts.transfer_targets:
            return self._rng.choice(self.opts.transfer_targets)
        others = sorted(q for q in self._queue_numbers if q != c.queue)
        return self._queue_numbers[self._rng.choice(others)][0] if others else None

    def _sim_hold(self, pcid: str, token: int) -> None:
        c = self._live(pcid, token)
        if c is not None and c.state == ANSWERED:
            c.state = HELD
            c.sim_held = True
            self._emit(c, EventKind.HELD)

    def _sim_resume(self, pcid: str, token: int) -> None:
        c = self._live(pcid, token)
        if c is not None and c.state == HELD and c.sim_held:
            c.state = ANSWERED
            c.sim_held = False
            self._emit(c, EventKind.RESUMED)

    def _sim_transfer(self, pcid: str, token: int, target: str) -> None:
        c = self._live(pcid, token)
        if c is not None and c.state in _TALKING:
            self._blind_transfer(c, target)

    def _customer_hangs_up(self, pcid: str, token: int) -> None:
        c = self._live(pcid, token)
        if c is not None and c.state in _TALKING:
            self._end(c, EndCause.NORMAL)

    # ---- outbound -----------------------------------------------------------------

    async def _outbound_loop(self, per_agent_per_hour: float) -> None:
        agents = sorted(self._agent_endpoint)
        if self.opts.outbound_agents is not None:
            agents = [a for a in agents if a in self.opts.outbound_agents]
        if not agents:
            return
        rate_per_s = per_agent_per_hour * len(agents) / 3600.0
        while True:
            await self._clock.sleep(self._rng.expovariate(rate_per_s))
            idle = [a for a in agents if a not in self._busy and not self._is_ringing(a)]
            if not idle or not self.opts.customer_numbers:
                continue
            agent = self._rng.choice(idle)
            try:
                self._dial(agent, self._agent_endpoint[agent], self._rng.choice(self.opts.customer_numbers),
                           call_id=None, caller_id=None, timeout_s=30.0)
            except Exception:
                log.exception("simulator_outbound_failed", agent=agent)

    def _is_ringing(self, agent: str) -> bool:
        return any(agent in c.ringing for c in self._calls.values())

    def _originate(self, cmd: Originate) -> CommandResult:
        agent = cmd.agent or self._ctx.agent_endpoints.get(cmd.agent_endpoint)
        if agent is None:
            raise AdapterError(f"endpoint {cmd.agent_endpoint!r} belongs to no known agent")
        try:
            to = to_e164(cmd.to_number, self._ctx.default_region)
        except ValueError as exc:
            raise AdapterError(f"originate: {exc}") from None
        pcid = self._dial(agent, cmd.agent_endpoint, to, call_id=cmd.call_id,
                          caller_id=cmd.caller_id, timeout_s=float(cmd.timeout_s))
        return CommandResult(provider_call_id=pcid)

    def _default_caller_id(self) -> str:
        if self.opts.caller_id:
            return self.opts.caller_id
        for numbers in self._queue_numbers.values():
            if numbers[0].startswith("+"):
                return numbers[0]
        return "+33100000000"

    def _dial(self, agent: str, endpoint: str, to: str, *, call_id: str | None,
              caller_id: str | None, timeout_s: float) -> str:
        """Ring the agent's phone, then the customer; they answer, are busy or ring out."""
        pcid = self._new_pcid()
        c = SimCall(pcid=pcid, call_id=call_id or make_call_id(self.tenant, self.name, pcid),
                    direction=Direction.OUTBOUND, from_number=caller_id or self._default_caller_id(),
                    to_number=to, queue=None, state=DIALING, agent=agent)
        self._calls[pcid] = c
        self._busy[agent] = pcid
        self._emit(c, EventKind.CREATED)
        self._emit(c, EventKind.RINGING, data={"endpoint": endpoint})
        token = c.token
        r = self._rng.random()
        if to in self.opts.busy_numbers:
            self._after(self._rng.uniform(1.0, 3.0), self._callee_result, pcid, token, EndCause.BUSY)
        elif to in self.opts.no_answer_numbers:
            self._after(timeout_s, self._callee_result, pcid, token, EndCause.NO_ANSWER)
        elif r < self.opts.customer_answer_probability:
            delay = draw(self._rng, self.opts.customer_answer_delay_s)
            if delay < timeout_s:
                self._after(delay, self._callee_answers, pcid, token)
            else:
                self._after(timeout_s, self._callee_result, pcid, token, EndCause.NO_ANSWER)
        elif r < self.opts.customer_answer_probability + self.opts.customer_busy_probability:
            self._after(self._rng.uniform(1.0, 3.0), self._callee_result, pcid, token, EndCause.BUSY)
        else:
            self._after(timeout_s, self._callee_result, pcid, token, EndCause.NO_ANSWER)
        log.debug("simulator_dialing", provider_call_id=pcid, agent=agent)
        return pcid

    def _callee_answers(self, pcid: str, token: int) -> None:
        c = self._live(pcid, token)
        if c is None or c.state != DIALING:
            return
        c.state = ANSWERED
        c.token += 1
        c.answered_mono = self._clock.monotonic()
        self._emit(c, EventKind.ANSWERED)
        self._conversation(c)

    def _callee_result(self, pcid: str, token: int, cause: EndCause) -> None:
        c = self._live(pcid, token)
        if c is not None and c.state == DIALING:
            self._end(c, cause)

    # ---- ending -------------------------------------------------------------------

    def _end(self, c: SimCall, cause: EndCause | str, *, ring_reason: str = "canceled",
             data: dict[str, Any] | None = None) -> None:
        """Close every open leg and side activity, then `ended`, then the recording."""
        for agent in c.ringing:
            self._emit(c, EventKind.NO_ANSWER, agent=agent, data={"reason": ring_reason})
        c.ringing = {}
        for sid, (mode, supervisor) in list(c.monitors.items()):
            self._emit(c, EventKind.MONITOR_STOPPED,
                       data={"mode": mode, "supervisor": supervisor, "session_id": sid})
        c.monitors.clear()
        if c.rec_state in ("recording", "paused"):
            self._emit(c, EventKind.RECORDING_STOPPED, data={"recording": c.recording})
            c.rec_state = "stopped"
        self._emit(c, EventKind.ENDED, data={"cause": str(cause), **(data or {})})
        if c.recording:
            self._emit(c, EventKind.RECORDING_READY, data=self._recording_data(c))
        c.token += 1
        self._calls.pop(c.pcid, None)
        if c.agent and self._busy.get(c.agent) == c.pcid:
            del self._busy[c.agent]
        log.debug("simulator_call_ended", provider_call_id=c.pcid, cause=str(cause))

    def _recording_data(self, c: SimCall) -> dict[str, Any]:
        data: dict[str, Any] = {"recording": c.recording, "format": "wav"}
        if c.state == VOICEMAIL:
            data["voicemail"] = True
        if c.answered_mono is not None:
            data["duration_s"] = round(self._clock.monotonic() - c.answered_mono, 3)
        path = next(self._recording_files)
        if path:
            data["path"] = path
        return data

    def _hangup(self, cmd: Hangup) -> CommandResult:
        c = self._call(cmd.provider_call_id)
        cause = EndCause.NORMAL if c.state in (*_TALKING, VOICEMAIL) else EndCause.CANCELED
        self._end(c, cause, data={"by": "us"})
        return CommandResult(provider_call_id=c.pcid)

    # ---- call control -------------------------------------------------------------

    def _talking(self, pcid: str, what: str) -> SimCall:
        c = self._call(pcid)
        if c.state not in _TALKING:
            raise AdapterError(f"call {pcid} is {c.state}: cannot {what} before it is answered")
        return c

    def _hold(self, cmd: Hold) -> CommandResult:
        c = self._talking(cmd.provider_call_id, "hold")
        if c.state == ANSWERED:
            c.state = HELD
            c.sim_held = False
            self._emit(c, EventKind.HELD)
        return CommandResult(provider_call_id=c.pcid)

    def _unhold(self, cmd: Unhold) -> CommandResult:
        c = self._talking(cmd.provider_call_id, "unhold")
        if c.state == HELD and c.consult is None:
            c.state = ANSWERED
            self._emit(c, EventKind.RESUMED)
        elif c.consult is not None:
            raise AdapterError(f"call {c.pcid} is in a consultation: complete or cancel the transfer")
        return CommandResult(provider_call_id=c.pcid)

    def _blind(self, cmd: BlindTransfer) -> CommandResult:
        c = self._call(cmd.provider_call_id)
        if c.state in (DIALING, VOICEMAIL):
            raise AdapterError(f"call {c.pcid} is {c.state}: cannot transfer it")
        if not cmd.target:
            raise AdapterError("blind transfer needs a target")
        if _is_voicemail(cmd.target):
            self._to_voicemail(c, cmd.target)
            return CommandResult(provider_call_id=c.pcid)
        new = self._blind_transfer(c, cmd.target)
        return CommandResult(provider_call_id=c.pcid, detail={"new_provider_call_id": new} if new else {})

    def _blind_transfer(self, c: SimCall, target: str) -> str | None:
        """To a colleague's phone, an answered call goes on with them; anywhere else it leaves
        our system (and to one of our queue numbers it comes back in as a new call)."""
        new_agent = self._ctx.agent_endpoints.get(target)
        if new_agent is not None and c.state in _TALKING:
            if c.agent and self._busy.get(c.agent) == c.pcid:
                del self._busy[c.agent]
            c.agent = new_agent
            self._busy[new_agent] = c.pcid
            self._emit(c, EventKind.TRANSFERRED, data={"target": target, "blind": True})
            if c.state == HELD and c.consult is None:
                c.state = ANSWERED
                self._emit(c, EventKind.RESUMED)
            return None
        self._emit(c, EventKind.TRANSFERRED, data={"target": target, "blind": True})
        self._end(c, EndCause.TRANSFERRED, data={"target": target})
        if self._queue_for(target) is not None:
            return self.inject_call(from_number=c.from_number, to_number=target)
        return None

    def _to_voicemail(self, c: SimCall, target: str) -> None:
        """Sent to a mailbox (queue overflow): the caller leaves a message, then the call ends."""
        if c.agent and self._busy.get(c.agent) == c.pcid:
            del self._busy[c.agent]
        for agent in c.ringing:
            self._emit(c, EventKind.NO_ANSWER, agent=agent, data={"reason": "canceled"})
        c.ringing = {}
        self._emit(c, EventKind.TRANSFERRED, data={"target": target, "voicemail": True})
        c.state = VOICEMAIL
        c.token += 1
        leaves_message = self._rng.random() < 0.6
        duration = self._rng.uniform(8.0, 40.0) if leaves_message else self._rng.uniform(3.0, 8.0)
        self._after(duration, self._voicemail_done, c.pcid, c.token, leaves_message)

    def _voicemail_done(self, pcid: str, token: int, message: bool) -> None:
        c = self._live(pcid, token)
        if c is None:
            return
        if message:  # the message is a recording of its own
            c.recording = c.recording or f"{self.name}-{c.pcid}-voicemail"
        self._end(c, EndCause.VOICEMAIL, data={"message_left": message})

    def _attended(self, cmd: AttendedTransfer) -> CommandResult:
        c = self._talking(cmd.provider_call_id, "transfer")
        if cmd.step == "consult":
            if c.consult is not None:
                raise AdapterError(f"call {c.pcid} already consults {c.consult}")
            c.consult = cmd.target
            if c.state == ANSWERED:
                c.state = HELD
                c.sim_held = False
                self._emit(c, EventKind.HELD, data={"consult": cmd.target})
        elif cmd.step == "cancel":
            if c.consult is None:
                raise AdapterError(f"call {c.pcid} has no consultation to cancel")
            c.consult = None
            c.state = ANSWERED
            self._emit(c, EventKind.RESUMED, data={"consult_canceled": True})
        elif cmd.step == "complete":
            target = c.consult or cmd.target
            c.consult = None
            new_agent = self._ctx.agent_endpoints.get(target)
            if new_agent is None:  # handed to an outside number: it leaves our system
                self._emit(c, EventKind.TRANSFERRED, data={"target": target, "attended": True})
                self._end(c, EndCause.TRANSFERRED, data={"target": target})
            else:  # a colleague takes over the customer: the call goes on with them
                if c.agent and self._busy.get(c.agent) == c.pcid:
                    del self._busy[c.agent]
                c.agent = new_agent
                self._busy[new_agent] = c.pcid
                self._emit(c, EventKind.TRANSFERRED, data={"target": target, "attended": True})
                c.state = ANSWERED
                self._emit(c, EventKind.RESUMED)
        else:
            raise AdapterError(
                f"attended transfer step must be consult, complete or cancel, not {cmd.step!r}")
        return CommandResult(provider_call_id=c.pcid)

    def _start_recording(self, c: SimCall) -> None:
        if c.rec_state == "recording":
            return
        c.recording = c.recording or f"{self.name}-{c.pcid}"
        c.rec_state = "recording"
        self._emit(c, EventKind.RECORDING_STARTED, data={"recording": c.recording})

    def _record(self, cmd: Record) -> CommandResult:
        c = self._talking(cmd.provider_call_id, "record")
        if cmd.action == "start":
            self._start_recording(c)
        elif cmd.action == "stop":
            if c.rec_state in ("recording", "paused"):
                c.rec_state = "stopped"
                self._emit(c, EventKind.RECORDING_STOPPED, data={"recording": c.recording})
        elif cmd.action == "pause":
            if c.rec_state != "recording":
                raise AdapterError(f"call {c.pcid} is not being recorded")
            c.rec_state = "paused"
            self._emit(c, EventKind.RECORDING_PAUSED, data={"recording": c.recording})
        elif cmd.action == "resume":
            if c.rec_state != "paused":
                raise AdapterError(f"call {c.pcid} has no paused recording")
            c.rec_state = "recording"
            self._emit(c, EventKind.RECORDING_RESUMED, data={"recording": c.recording})
        else:
            raise AdapterError(f"record action must be start, stop, pause or resume, not {cmd.action!r}")
        return CommandResult(provider_call_id=c.pcid, detail={"recording": c.recording})

    def _play(self, cmd: Play) -> CommandResult:
        c = self._call(cmd.provider_call_id)
        self._after(self.opts.play_s, self._played, c.pcid, c.token, cmd.media)
        return CommandResult(provider_call_id=c.pcid)

    def _played(self, pcid: str, token: int, media: str) -> None:
        c = self._live(pcid, token)
        if c is not None:
            self._emit(c, EventKind.PLAYBACK_FINISHED, data={"media": media})

    def _voicemail_drop(self, cmd: VoicemailDrop) -> CommandResult:
        """The agent is free at once; the message plays into the voicemail, then the call ends."""
        c = self._call(cmd.provider_call_id)
        if c.state not in (*_TALKING, DIALING):
            raise AdapterError(f"call {c.pcid} is {c.state}: nothing to drop a message into")
        agent = c.agent
        if agent and self._busy.get(agent) == c.pcid:
            del self._busy[agent]
        c.state = VOICEMAIL
        c.token += 1
        self._after(self.opts.voicemail_drop_s, self._voicemail_played, c.pcid, c.token, cmd.media, agent)
        return CommandResult(provider_call_id=c.pcid,
                             detail={"agent_left": True, "duration_s": self.opts.voicemail_drop_s})

    def _voicemail_played(self, pcid: str, token: int, media: str, agent: str | None) -> None:
        c = self._live(pcid, token)
        if c is None:
            return
        self._emit(c, EventKind.PLAYBACK_FINISHED,
                   data={"media": media, "voicemail_drop": True, "agent_left": agent})
        self._end(c, EndCause.VOICEMAIL)

    def _monitor(self, cmd: Monitor) -> CommandResult:
        c = self._talking(cmd.provider_call_id, "monitor")
        supervisor = self._ctx.agent_endpoints.get(cmd.supervisor_endpoint, cmd.supervisor_endpoint)
        if cmd.mode == "stop":
            if cmd.session_id not in c.monitors:
                raise AdapterError(f"no monitor session {cmd.session_id!r} on call {c.pcid}")
            mode, sup = c.monitors.pop(cmd.session_id)  # type: ignore[arg-type]
            self._emit(c, EventKind.MONITOR_STOPPED,
                       data={"mode": mode, "supervisor": sup, "session_id": cmd.session_id})
            return CommandResult(provider_call_id=c.pcid, session_id=cmd.session_id)
        if cmd.mode not in _MONITOR_MODES:
            raise AdapterError(
                f"monitor mode must be listen, whisper, barge, takeover or stop, not {cmd.mode!r}")
        sid = cmd.session_id
        if sid is not None:  # switching mode: close the old one first
            if sid not in c.monitors:
                raise AdapterError(f"no monitor session {sid!r} on call {c.pcid}")
            old, sup = c.monitors.pop(sid)
            self._emit(c, EventKind.MONITOR_STOPPED, data={"mode": old, "supervisor": sup, "session_id": sid})
        else:
            sid = f"{c.pcid}-mon{next(self._sessions)}"
        c.monitors[sid] = (cmd.mode, supervisor)
        data: dict[str, Any] = {"mode": cmd.mode, "supervisor": supervisor, "session_id": sid}
        if cmd.mode == "takeover":  # the supervisor keeps the customer; the agent drops off
            data["previous_agent"] = c.agent
            if c.agent and self._busy.get(c.agent) == c.pcid:
                del self._busy[c.agent]
        self._emit(c, EventKind.MONITOR_STARTED, data=data)
        if cmd.mode == "takeover":
            c.agent = supervisor
            self._busy[supervisor] = c.pcid
        return CommandResult(provider_call_id=c.pcid, session_id=sid)

    def _dtmf(self, cmd: SendDtmf) -> CommandResult:
        c = self._talking(cmd.provider_call_id, "send DTMF")
        bad = sorted(set(cmd.digits.upper()) - _DTMF)
        if not cmd.digits or bad:
            raise AdapterError(f"DTMF digits must be 0-9 * # A-D, got {cmd.digits!r}")
        for d in cmd.digits.upper():
            self._emit(c, EventKind.DTMF, data={"digit": d, "sent": True})
        return CommandResult(provider_call_id=c.pcid)

    # ---- dispatch -----------------------------------------------------------------

    def _call(self, pcid: str) -> SimCall:
        c = self._calls.get(pcid)
        if c is None:
            raise CallNotFound(f"provider {self.name!r} has no call {pcid!r} (ended or unknown)")
        return c

    _HANDLERS: ClassVar[dict[type, str]] = {
        Connect: "_connect", Answer: "_answer", Originate: "_originate", Hangup: "_hangup",
        Hold: "_hold", Unhold: "_unhold", BlindTransfer: "_blind", AttendedTransfer: "_attended",
        Record: "_record", Play: "_play", VoicemailDrop: "_voicemail_drop", Monitor: "_monitor",
        SendDtmf: "_dtmf",
    }

    async def execute(self, command: Command) -> CommandResult:
        check_capability(self.type, self.capabilities, command)
        handler = self._HANDLERS.get(type(command))
        if handler is None:
            raise AdapterError(f"simulator: unknown command {type(command).__name__}")
        result: CommandResult = getattr(self, handler)(command)
        # let the timers this command started register with the clock before the caller
        # advances it (a ManualClock only wakes sleepers it already knows)
        await asyncio.sleep(0)
        log.debug("simulator_command", command=command.name, provider_call_id=result.provider_call_id)
        return result
