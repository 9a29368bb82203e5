"""FreeSWITCH adapter over the event socket (inbound mode: we connect to mod_event_socket).

Call model (what FreeSWITCH sees):
- inbound: the dialplan answers the customer and parks it; `Connect` originates each agent
  endpoint to `&park()` (`cti-a-...` uuids) and `uuid_bridge`s the first that answers;
- click-to-call: the agent's endpoint is originated first (`cti-o-<call id>`), once it answers
  the customer (`cti-c-<call id>`, through `dial_template`), and the two are bridged;
- monitor: the supervisor's endpoint is originated to `&eavesdrop(<agent leg>)` with the
  eavesdrop variables for the mode (whisper to the agent / both legs for barge); a later mode
  switch sends the eavesdrop DTMF (0 listen, 2 whisper to the agent, 3 three-way) with
  `uuid_recv_dtmf`.

Commands go out as `api` (synchronous reply) or `bgapi` (reply in a BACKGROUND_JOB event).
Replies arrive in order, so pending replies are a FIFO of futures. Events are handled by one
task fed by the reader, so a handler may itself send a command and wait for its reply.
Config keys: host, port (8021), password; optionally dial_template (`sofia/gateway/trunk/
{number}`), transfer_context, recordings_dir, record_stereo (true: the recordings we start are
stereo, `RECORD_STEREO` on the customer's leg, so the customer is the left channel and the agent
the right; said in recording_ready's `channel_roles`), backoff_initial_s, backoff_max_s,
keepalive_s, keepalive_timeout_s.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import structlog

from cti.adapters.base import (
    AdapterContext,
    AdapterError,
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
    after_latest,
    register,
    run_handler,
)
from cti.adapters.freeswitch import wire
from cti.clock import SystemClock
from cti.model import CallEvent, Direction, EndCause, EventKind, make_call_id, make_event_id
from cti.phone import normalize as normalize_number

log = structlog.get_logger("cti.adapters.freeswitch")

_STOP = object()
# eavesdrop DTMF while listening: 0 back to listen, 2 talk to the eavesdropped leg, 3 three-way
_MODE_DTMF = {"listen": "0", "whisper": "2", "barge": "3"}
# The same modes from the start. eavesdrop mixes the supervisor into the agent leg's streams:
# `whisper_bleg` into what the agent hears (what digit 2 does), `whisper_aleg` into what the
# agent sends, i.e. what the customer hears (digit 1). `eavesdrop_bridge_*` only choose what
# the supervisor hears (both sides when unset), so they cannot make a barge.
_MODE_VARS: dict[str, dict[str, object]] = {
    "listen": {},
    "whisper": {"eavesdrop_whisper_bleg": "true"},
    "barge": {"eavesdrop_whisper_aleg": "true", "eavesdrop_whisper_bleg": "true"},
}


@dataclass
class _Monitor:
    session_id: str
    pcid: str
    mode: str
    supervisor: str
    started: bool = False


@dataclass
class _Call:
    pcid: str
    call_id: str
    direction: Direction
    customer: str | None
    from_number: str | None = None
    to_number: str | None = None
    queue: str | None = None
    agent: str | None = None
    agent_leg: str | None = None
    ringing_legs: dict[str, str] = field(default_factory=dict)
    answered: bool = False
    ended: bool = False
    ended_at: datetime | None = None
    voicemail: bool = False
    voicemail_media: str | None = None
    released: set[str] = field(default_factory=set)   # our legs we hung up on purpose
    consult_leg: str | None = None             # attended transfer: the consulted party's channel
    consult_target: str | None = None
    consult_answered: bool = False
    recordings: list[str] = field(default_factory=list)
    stereo_recordings: set[str] = field(default_factory=set)  # ours, started with RECORD_STEREO
    live_recording: str | None = None
    monitors: dict[str, _Monitor] = field(default_factory=dict)
    emitted: set[str] = field(default_factory=set)
    last_at: datetime | None = None            # latest provider time seen for this call


class _Conn:
    """One event-socket connection: writer + FIFO of reply futures."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.replies: deque[asyncio.Future[wire.Frame]] = deque()
        self.auth_requested = asyncio.Event()

    async def send(self, data: bytes, within: float = 10.0) -> wire.Frame:
        fut: asyncio.Future[wire.Frame] = asyncio.get_running_loop().create_future()
        self.replies.append(fut)
        self.writer.write(data)
        await self.writer.drain()
        try:
            async with asyncio.timeout(within):  # (wait_for can swallow a cancel on 3.11)
                return await fut
        except TimeoutError:
            # replies are matched by order: after a lost one every later reply would be
            # misattributed, so the connection is dropped (the supervisor reconnects + resyncs)
            self.writer.transport.abort()
            raise

    def fail_all(self, exc: Exception) -> None:
        while self.replies:
            fut = self.replies.popleft()
            if not fut.done():
                fut.set_exception(exc)


@register("freeswitch")
class FreeSwitchAdapter:
    type: ClassVar[str] = "freeswitch"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({
        Capability.CONNECT, Capability.ORIGINATE, Capability.HANGUP, Capability.HOLD,
        Capability.BLIND_TRANSFER, Capability.ATTENDED_TRANSFER, Capability.RECORD,
        Capability.RECORD_PAUSE, Capability.PLAY,
        Capability.VOICEMAIL_DROP, Capability.MONITOR_LISTEN, Capability.MONITOR_WHISPER,
        Capability.MONITOR_BARGE, Capability.DTMF,
    })

    def __init__(self, settings: Any, ctx: AdapterContext) -> None:
        opts = settings.options
        for key in ("host", "password"):
            if not opts.get(key):
                raise ValueError(f"provider {settings.name!r} (freeswitch): missing option {key!r}")
        self.name: str = settings.name
        self.tenant: str = ctx.tenant
        self.ctx = ctx
        self.clock = ctx.clock or SystemClock()
        self.host = str(opts["host"])
        self.port = int(opts.get("port") or 8021)
        self.password = str(opts["password"])
        self.dial_template = str(opts.get("dial_template") or "sofia/gateway/trunk/{number}")
        self.transfer_context = str(opts.get("transfer_context") or "default")
        self.recordings_dir = str(opts.get("recordings_dir") or "/var/lib/freeswitch/recordings")
        self.record_stereo = str(opts.get("record_stereo", True)).lower() not in ("false", "0", "no", "off")
        self.backoff_initial = float(opts.get("backoff_initial_s", 0.5))
        self.backoff_max = float(opts.get("backoff_max_s", 30.0))
        self.keepalive_s = float(opts.get("keepalive_s", 15.0))
        self.keepalive_timeout_s = float(opts.get("keepalive_timeout_s", 5.0))
        self.metrics: Any = None  # set by the app (cti.metrics.Metrics)
        self._out: asyncio.Queue[Any] = asyncio.Queue()
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._conn: _Conn | None = None
        self._ready = False
        self._calls: dict[str, _Call] = {}
        self._legs: dict[str, tuple[str, str]] = {}   # channel uuid -> (pcid, role)
        self._monitors: dict[str, _Monitor] = {}
        # ended calls are kept a while for late events (recordings, duplicates), then forgotten
        self._ended: OrderedDict[str, None] = OrderedDict()
        self.keep_ended = int(opts.get("keep_ended", 1000))
        self._jobs: dict[str, str] = {}               # bgapi Job-UUID -> leg uuid it originates
        self._causes: dict[str, str] = {}             # leg uuid -> Hangup-Cause seen on CHANNEL_HANGUP
        self._tasks: list[asyncio.Task[Any]] = []
        self.connections = 0

    # ---- lifecycle -------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run(), name=f"esl-{self.name}"),
                asyncio.create_task(self._process(), name=f"esl-{self.name}-events"),
            ]

    async def stop(self) -> None:
        self._ready = False
        self._inbox.put_nowait(_STOP)  # type: ignore[arg-type]
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        self._out.put_nowait(_STOP)

    async def events(self) -> AsyncIterator[CallEvent]:
        while True:
            item = await self._out.get()
            if item is _STOP:
                return
            yield item

    # ---- connection supervisor ---------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._session()
                attempt = 0  # a session that got going resets the backoff
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("esl_disconnected", provider=self.name, error=str(exc)[:200])
            self._ready = False
            if self.metrics is not None:
                self.metrics.adapter_reconnects.labels(self.name).inc()
            delay = min(self.backoff_max, self.backoff_initial * (2 ** min(attempt, 16)))
            attempt += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _session(self) -> None:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 5)
        conn = _Conn(writer)
        read_task = asyncio.create_task(self._read(reader, conn))
        try:
            auth_wait = asyncio.create_task(conn.auth_requested.wait())
            done, _ = await asyncio.wait({auth_wait, read_task}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
            auth_wait.cancel()
            if read_task in done:
                read_task.result()  # the socket closed before asking for auth: raises
            if not conn.auth_requested.is_set():
                raise AdapterError("the event socket did not ask for auth within 5 s")
            reply = await conn.send(wire.auth(self.password))
            if not reply.reply_text.startswith("+OK"):
                raise AdapterError(f"event socket refused the password: {reply.reply_text}")
            reply = await conn.send(wire.subscribe())
            if not reply.reply_text.startswith("+OK"):
                raise AdapterError(f"event subscription failed: {reply.reply_text}")
            self._conn = conn
            await self._resync()
            self.connections += 1
            self._ready = True
            log.info("esl_connected", provider=self.name)
            keepalive = asyncio.create_task(self._keepalive(conn))
            try:
                done, _ = await asyncio.wait({read_task, keepalive}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                keepalive.cancel()
            for t in done:
                t.result()
        finally:
            self._ready = False
            self._conn = None
            conn.fail_all(AdapterError("event socket connection lost"))
            read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await read_task
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _keepalive(self, conn: _Conn) -> None:
        """A silent socket (a dead NAT entry, a hung switch) is only noticed by asking."""
        while True:
            await asyncio.sleep(self.keepalive_s)
            try:
                await conn.send(wire.api("status"), within=self.keepalive_timeout_s)
            except TimeoutError:
                raise ConnectionError("event socket keepalive got no reply") from None

    async def _read(self, reader: asyncio.StreamReader, conn: _Conn) -> None:
        try:
            await self._read_frames(reader, conn)
        finally:
            conn.fail_all(AdapterError("event socket connection lost"))  # nobody waits on a dead socket

    async def _read_frames(self, reader: asyncio.StreamReader, conn: _Conn) -> None:
        parser = wire.FrameParser()
        while True:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("event socket closed by FreeSWITCH")
            try:
                frames = parser.feed(data)
            except wire.WireError as exc:
                # the framing is lost: nothing after this can be trusted, so reconnect
                self._wire_error(str(exc), data)
                raise
            for frame in frames:
                ctype = frame.content_type
                if ctype == "auth/request":
                    conn.auth_requested.set()
                elif ctype in ("command/reply", "api/response"):
                    if conn.replies:
                        fut = conn.replies.popleft()
                        if not fut.done():
                            fut.set_result(frame)
                    else:
                        self._wire_error("reply without a pending command", frame.body or b"")
                elif ctype.startswith("text/event-"):
                    try:
                        self._inbox.put_nowait(wire.parse_event(frame))
                    except wire.WireError as exc:
                        self._wire_error(str(exc), frame.body)
                elif ctype in ("text/disconnect-notice", "text/rude-rejection"):
                    raise ConnectionError(f"FreeSWITCH: {frame.body[:120].decode('utf-8', 'replace')}")
                else:
                    self._wire_error(f"unknown Content-Type {ctype!r}", frame.body)

    def _wire_error(self, reason: str, data: bytes) -> None:
        log.warning("esl_wire_error", provider=self.name, reason=reason,
                    snippet=data[:200].decode("utf-8", "replace"))
        if self.metrics is not None:
            self.metrics.wire_errors.labels(self.name).inc()

    async def _process(self) -> None:
        while True:
            ev = await self._inbox.get()
            if ev is _STOP:
                return
            try:
                await self._apply(ev)
            except AdapterError as exc:  # a follow-up command failed (the channel left meanwhile...)
                log.warning("esl_action_failed", provider=self.name, event=ev.name, error=str(exc)[:200])
            except Exception as exc:  # one bad event never stops the adapter
                log.exception("esl_event_failed", provider=self.name, event=ev.name, error=str(exc))
                self._wire_error(f"{ev.name}: {exc}", str(ev.headers)[:200].encode())

    # ---- commands on the wire ------------------------------------------------------------

    async def _api(self, cmd: str) -> str:
        conn = self._conn
        if conn is None:
            raise AdapterError(f"freeswitch {self.name}: not connected")
        try:
            frame = await conn.send(wire.api(cmd))
        except (TimeoutError, ConnectionError) as exc:
            raise AdapterError(f"api {cmd.split()[0]} failed: {exc}") from exc
        return frame.body.decode("utf-8", "replace")

    async def _api_ok(self, cmd: str) -> str:
        ok, detail = wire.job_result(await self._api(cmd))
        if not ok:
            if wire.channel_missing(detail):
                raise CallNotFound(f"{cmd.split()[0]}: {detail}")
            raise AdapterError(f"{cmd.split()[0]}: {detail}")
        return detail

    async def _quiet(self, cmd: str) -> None:
        with contextlib.suppress(AdapterError):
            await self._api(cmd)

    async def _bgapi(self, cmd: str, leg: str) -> None:
        conn = self._conn
        if conn is None:
            raise AdapterError(f"freeswitch {self.name}: not connected")
        job = str(uuid.uuid4())
        self._jobs[job] = leg
        try:
            reply = await conn.send(wire.bgapi(cmd, job))
        except (TimeoutError, ConnectionError) as exc:
            self._jobs.pop(job, None)
            raise AdapterError(f"bgapi failed: {exc}") from exc
        if not reply.reply_text.startswith("+OK"):
            self._jobs.pop(job, None)
            raise AdapterError(f"bgapi refused: {reply.reply_text}")

    # ---- emitting ------------------------------------------------------------------------

    def _emit(self, call: _Call, kind: EventKind, at: datetime, *id_parts: object, seq: int = 0,
              agent: str | None = None, data: dict[str, Any] | None = None) -> None:
        eid = make_event_id(self.name, call.pcid, kind.value, *id_parts)
        if eid in call.emitted:
            return
        call.emitted.add(eid)
        if call.last_at is None or at > call.last_at:
            call.last_at = at
        self._out.put_nowait(CallEvent(
            event_id=eid, provider=self.name, provider_call_id=call.pcid, call_id=call.call_id,
            kind=kind, occurred_at=at, seq=seq, tenant=self.tenant, agent=agent or call.agent,
            queue=call.queue, direction=call.direction, from_number=call.from_number,
            to_number=call.to_number, data=data or {},
        ))

    def _now(self, call: _Call) -> datetime:
        """Now, for a fact we observe ourselves: after the call's latest provider timestamp."""
        return after_latest(call.last_at, self.clock.now())

    def _number(self, raw: str | None) -> str | None:
        return normalize_number(raw, self.ctx.default_region) if raw else None

    def _call_of(self, leg: str) -> _Call | None:
        entry = self._legs.get(leg)
        return self._calls.get(entry[0]) if entry else None

    # ---- event handling ------------------------------------------------------------------

    async def _apply(self, ev: wire.FsEvent) -> None:
        name = ev.name
        if name == "BACKGROUND_JOB":
            await self._on_job(ev)
            return
        u = ev.uuid
        if name == "CHANNEL_CREATE":
            if u not in self._legs and not u.startswith("cti-") and ev.get("Call-Direction") == "inbound":
                self._new_inbound(u, ev.get("Caller-Caller-ID-Number"), ev.get("Caller-Destination-Number"),
                                  ev.timestamp, ev.seq)
            return
        entry = self._legs.get(u)
        if entry is None:
            return
        pcid, role = entry
        call = self._calls.get(pcid)
        at, seq = ev.timestamp, ev.seq
        if name in ("CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA"):
            if call is not None and not call.ended and role in ("agent", "origin"):
                agent = call.ringing_legs.get(u) if role == "agent" else call.agent
                self._emit(call, EventKind.RINGING, at, u, seq=seq, agent=agent)
        elif name == "CHANNEL_ANSWER":
            await self._on_answer(u, role, call)
        elif name == "CHANNEL_BRIDGE":
            self._on_bridge(u, ev.other_uuid, at, seq)
        elif name in ("CHANNEL_HOLD", "CHANNEL_UNHOLD"):
            if call is not None and not call.ended:
                kind = EventKind.HELD if name == "CHANNEL_HOLD" else EventKind.RESUMED
                self._emit(call, kind, at, ev.get("Event-Date-Timestamp"), seq=seq)
        elif name == "CHANNEL_HANGUP":
            self._causes[u] = ev.get("Hangup-Cause")
        elif name == "CHANNEL_HANGUP_COMPLETE":
            await self._on_hangup(u, ev.get("Hangup-Cause") or self._causes.get(u, ""), at, seq)
        elif name == "CHANNEL_EXECUTE":
            if role == "supervisor" and ev.get("Application") == "eavesdrop":
                mon = self._monitors.get(u.removeprefix("cti-s-"))
                if mon is not None and call is not None and not call.ended:
                    mon.started = True
                    self._emit(call, EventKind.MONITOR_STARTED, at, mon.session_id, mon.mode, seq=seq,
                               data={"mode": mon.mode, "session_id": mon.session_id})
        elif name in ("RECORD_START", "RECORD_STOP"):
            self._on_record(call, name, ev.get("Record-File-Path"), at, seq)
        elif name == "PLAYBACK_STOP":
            if call is not None:
                media = ev.get("Playback-File-Path")
                self._emit(call, EventKind.PLAYBACK_FINISHED, at, u, ev.get("Event-Date-Timestamp"), seq=seq,
                           data={"media": media})
                if call.voicemail and media == call.voicemail_media and call.customer:
                    await self._quiet(f"uuid_kill {call.customer}")
        elif name == "DTMF":
            # a supervisor's leg fires DTMF for the eavesdrop mode digits we send it (uuid_recv_dtmf):
            # our own commands, not digits pressed on the call
            if call is not None and ev.get("DTMF-Digit") and role != "supervisor":
                self._emit(call, EventKind.DTMF, at, u, ev.get("Event-Date-Timestamp"), seq=seq,
                           data={"digit": ev.get("DTMF-Digit"), "leg": role})

    def _new_inbound(self, u: str, caller: str, dest: str, at: datetime, seq: int) -> None:
        if u in self._calls:
            return
        to_number = self._number(dest)
        queue = self.ctx.queue_numbers.get(to_number or "") or self.ctx.queue_numbers.get(dest)
        call = _Call(pcid=u, call_id=make_call_id(self.tenant, self.name, u), direction=Direction.INBOUND,
                     customer=u, from_number=self._number(caller), to_number=to_number, queue=queue)
        self._calls[u] = call
        self._legs[u] = (u, "customer")
        self._emit(call, EventKind.CREATED, at, seq=seq)
        if queue:
            self._emit(call, EventKind.QUEUED, at, seq=seq)

    async def _on_answer(self, u: str, role: str, call: _Call | None) -> None:
        if role == "supervisor":
            return  # the eavesdrop itself (CHANNEL_EXECUTE) says the monitor started
        if call is None or call.ended:
            await self._quiet(f"uuid_kill {u}")
            return
        if role == "agent":
            if call.agent_leg is not None or call.customer is None:
                await self._quiet(f"uuid_kill {u} LOSE_RACE")
                return
            call.agent_leg = u
            call.agent = call.ringing_legs.get(u, call.agent)
            await self._api_ok(f"uuid_bridge {call.customer} {u}")
            for other in [leg for leg in call.ringing_legs if leg != u]:
                await self._quiet(f"uuid_kill {other} LOSE_RACE")
        elif role == "origin":
            customer = f"cti-c-{call.call_id}"
            call.customer = customer
            call.agent_leg = call.pcid
            self._legs[customer] = (call.pcid, "customer")
            variables = {"origination_uuid": customer, "originate_timeout": 60,
                         "origination_caller_id_number": call.from_number or "", "cti_call_id": call.call_id}
            endpoint = self.dial_template.format(number=call.to_number)
            try:
                await self._bgapi(wire.originate(endpoint, "&park()", variables), customer)
            except AdapterError as exc:
                log.warning("esl_customer_dial_failed", provider=self.name, error=str(exc)[:200])
                self._end(call, EndCause.FAILED, self._now(call))
                await self._teardown(call)
        elif role == "customer" and call.direction is Direction.OUTBOUND:
            await self._api_ok(f"uuid_bridge {call.pcid} {u}")
        elif role == "consult" and u == call.consult_leg and call.agent_leg:
            call.consult_answered = True
            await self._api_ok(f"uuid_bridge {call.agent_leg} {u}")  # the customer waits, parked on hold

    def _on_bridge(self, a: str, b: str, at: datetime, seq: int) -> None:
        call = self._call_of(a) or self._call_of(b)
        if call is None or call.ended or call.answered:
            return
        if {a, b} == {call.customer, call.agent_leg}:
            call.answered = True
            self._emit(call, EventKind.ANSWERED, at, seq=seq, agent=call.agent)

    async def _on_job(self, ev: wire.FsEvent) -> None:
        leg = self._jobs.pop(ev.get("Job-UUID"), None)
        if leg is None:
            return
        ok, detail = wire.job_result(ev.body)
        if not ok and leg in self._legs:
            # the originate failed before (or without) a channel: same as that leg hanging up
            await self._on_hangup(leg, detail.split()[0] if detail else "", ev.timestamp, ev.seq)

    async def _on_hangup(self, u: str, cause: str, at: datetime, seq: int) -> None:
        entry = self._legs.pop(u, None)
        self._causes.pop(u, None)
        if entry is None:
            return
        pcid, role = entry
        if role == "supervisor":
            mon = self._monitors.get(u.removeprefix("cti-s-"))
            if mon is not None:
                await self._teardown_monitor(mon, at)
            return
        call = self._calls.get(pcid)
        if call is None or u in call.released:
            return
        if role == "consult":
            if u == call.consult_leg and not call.ended:
                await self._consult_back(call)  # the consulted party left: back to the customer
            return
        if role == "agent":
            agent = call.ringing_legs.pop(u, None)
            if u != call.agent_leg:
                if not call.ended:
                    self._emit(call, EventKind.NO_ANSWER, at, u, seq=seq, agent=agent,
                               data={"reason": wire.end_cause(cause).value})
                return
            if not call.ended and not call.voicemail and call.customer:
                await self._quiet(f"uuid_kill {call.customer}")
            return
        if call.direction is Direction.INBOUND:
            if call.voicemail:
                self._end(call, EndCause.VOICEMAIL, at, seq)
            else:
                self._end(call, EndCause.NORMAL if call.answered else EndCause.CALLER_HANGUP, at, seq)
        elif role == "origin":
            self._end(call, EndCause.NORMAL if call.answered else EndCause.CANCELED, at, seq)
        elif role == "customer":
            if call.answered:
                self._end(call, EndCause.VOICEMAIL if call.voicemail else EndCause.NORMAL, at, seq)
            else:
                c = wire.end_cause(cause)
                self._end(call, c if c in (EndCause.BUSY, EndCause.NO_ANSWER, EndCause.FAILED)
                          else EndCause.CANCELED, at, seq)
        await self._teardown(call)

    def _end(self, call: _Call, cause: EndCause, at: datetime, seq: int = 0) -> None:
        if call.ended:
            return
        call.ended = True
        call.ended_at = at
        self._ended[call.pcid] = None
        while len(self._ended) > self.keep_ended:
            self._forget(self._ended.popitem(last=False)[0])
        for mon in list(call.monitors.values()):
            if mon.started:
                mon.started = False
                self._emit(call, EventKind.MONITOR_STOPPED, at, mon.session_id, mon.mode, seq=seq,
                           data={"mode": mon.mode, "session_id": mon.session_id})
        self._emit(call, EventKind.ENDED, at, seq=seq, data={"cause": cause.value})
        for path in call.recordings:
            # FreeSWITCH writes the file itself; it is complete once the call is over
            data: dict[str, Any] = {"recording": path, "path": path}
            if path in call.stereo_recordings:
                data["channel_roles"] = ["customer", "agent"]
            self._emit(call, EventKind.RECORDING_READY, at, path, seq=seq + 1 if seq else 0, data=data)

    def _forget(self, pcid: str) -> None:
        self._calls.pop(pcid, None)
        for leg in [leg for leg, (p, _r) in self._legs.items() if p == pcid]:
            del self._legs[leg]

    async def _teardown(self, call: _Call) -> None:
        for mon in list(call.monitors.values()):
            await self._teardown_monitor(mon, call.ended_at or self.clock.now())
        for leg, (pcid, _role) in list(self._legs.items()):
            if pcid == call.pcid:
                await self._quiet(f"uuid_kill {leg}")

    def _on_record(self, call: _Call | None, name: str, path: str, at: datetime, seq: int) -> None:
        if call is None or not path:
            return
        if name == "RECORD_START":
            if path not in call.recordings:
                call.recordings.append(path)
            call.live_recording = path
            self._emit(call, EventKind.RECORDING_STARTED, at, path, seq=seq, data={"recording": path})
        else:
            call.live_recording = None
            self._emit(call, EventKind.RECORDING_STOPPED, at, path, seq=seq, data={"recording": path})

    async def _teardown_monitor(self, mon: _Monitor, at: datetime) -> None:
        self._monitors.pop(mon.session_id, None)
        call = self._calls.get(mon.pcid)
        if call is not None:
            call.monitors.pop(mon.session_id, None)
            if mon.started:
                # a stop we ordered is stamped by our clock, and the provider's stamps (its
                # start among them) may run ahead of it: the stop must still sort after the start
                at = after_latest(call.last_at, at)
                self._emit(call, EventKind.MONITOR_STOPPED, at, mon.session_id, mon.mode,
                           data={"mode": mon.mode, "session_id": mon.session_id})
        mon.started = False
        if self._legs.pop(mon.supervisor, None) is not None:
            await self._quiet(f"uuid_kill {mon.supervisor}")

    # ---- resync --------------------------------------------------------------------------

    async def _resync(self) -> None:
        """FreeSWITCH keeps no backlog for a new socket: compare `show channels` with ours."""
        now = self.clock.now()
        rows = wire.parse_show_channels(await self._api("show channels as json"))
        pairs = wire.parse_show_calls(await self._api("show calls as json"))
        alive = {r.uuid for r in rows}
        for r in rows:
            if r.uuid not in self._legs and not r.uuid.startswith("cti-") and r.direction == "inbound":
                created = datetime.fromtimestamp(r.created_epoch, now.tzinfo) if r.created_epoch else now
                self._new_inbound(r.uuid, r.cid_num, r.dest, created, 0)
        await self._adopt_bridged(pairs, {r.uuid: r for r in rows})
        # results of jobs sent on the old connection may never come (a BACKGROUND_JOB fired while
        # we were away is not kept for us), and `show channels` is now the truth about those legs
        self._jobs.clear()
        by_uuid = {r.uuid: r for r in rows}
        for leg, (pcid, role) in list(self._legs.items()):
            r = by_uuid.get(leg)
            call = self._calls.get(pcid)
            if r is None or call is None or call.ended or r.callstate not in ("ACTIVE", "HELD"):
                continue
            # answered while we were away (CHANNEL_ANSWER lost): finish what we would have done
            if role == "agent" and call.agent_leg is None:
                await self._on_answer(leg, role, call)
            elif role == "origin" and call.customer is None:
                await self._on_answer(leg, role, call)
            elif role == "customer" and call.direction is Direction.OUTBOUND and leg not in pairs:
                await self._on_answer(leg, role, call)
            elif role == "supervisor" and r.application == "eavesdrop":
                mon = self._monitors.get(leg.removeprefix("cti-s-"))
                if mon is not None and not mon.started:
                    mon.started = True
                    self._emit(call, EventKind.MONITOR_STARTED, now, mon.session_id, mon.mode,
                               data={"mode": mon.mode, "session_id": mon.session_id})
        for call in list(self._calls.values()):
            if not call.ended and not call.answered and call.customer and call.agent_leg:
                if pairs.get(call.customer) == call.agent_leg:
                    self._on_bridge(call.customer, call.agent_leg, now, 0)
        for leg in [u for u in self._legs if u not in alive]:
            await self._on_hangup(leg, "", now, 0)

    async def _adopt_bridged(self, pairs: dict[str, str], rows: dict[str, wire.ShowChannel]) -> None:
        """After a restart our own legs are strangers: rebuild connected calls from the
        bridged pairs (`show calls`), so they end as answered calls, not abandoned ones."""
        for a, b in pairs.items():
            if a.startswith("cti-o-") and b.startswith("cti-c-") and a not in self._calls:
                call = _Call(pcid=a, call_id=a.removeprefix("cti-o-"), direction=Direction.OUTBOUND, customer=b,
                             agent_leg=a, agent=await self._getvar(a, "cti_agent"),
                             to_number=self._number(rows[b].dest) if b in rows else None)
                self._calls[a] = call
                self._legs[a] = (a, "origin")
                self._legs[b] = (a, "customer")
                continue
            call = self._calls.get(a)
            if (call is None or call.direction is not Direction.INBOUND or call.agent_leg is not None
                    or not b.startswith("cti-a-") or b in self._legs):
                continue
            call.agent_leg = b
            call.agent = await self._getvar(b, "cti_agent")
            call.ringing_legs[b] = call.agent or ""
            self._legs[b] = (a, "agent")
            log.info("esl_call_adopted", provider=self.name, call=a, agent=call.agent)

    async def _getvar(self, leg: str, name: str) -> str | None:
        value = (await self._api(f"uuid_getvar {leg} {name}")).strip()
        return None if not value or value.startswith("-ERR") or value == "_undef_" else value

    # ---- commands ------------------------------------------------------------------------

    def _call(self, pcid: str) -> _Call:
        call = self._calls.get(pcid)
        if call is None or call.ended:
            raise CallNotFound(f"freeswitch {self.name}: no active call {pcid!r}")
        return call

    async def execute(self, command: Command) -> CommandResult:
        return await run_handler(self, command, connected=self._ready)

    async def _do_connect(self, cmd: Connect) -> CommandResult:
        call = self._call(cmd.provider_call_id)
        if call.answered:
            raise AdapterError(f"call {call.pcid} is already answered")
        for agent, endpoint in cmd.targets:
            leg = f"cti-a-{uuid.uuid4().hex[:12]}"
            self._legs[leg] = (call.pcid, "agent")
            call.ringing_legs[leg] = agent
            variables = {"origination_uuid": leg, "originate_timeout": max(1, round(cmd.timeout_s)),
                         "origination_caller_id_number": call.from_number or "", "cti_call_id": call.call_id,
                         "cti_agent": agent}
            try:
                await self._bgapi(wire.originate(endpoint, "&park()", variables), leg)
            except AdapterError as exc:
                self._legs.pop(leg, None)
                call.ringing_legs.pop(leg, None)
                self._emit(call, EventKind.NO_ANSWER, self._now(call), leg, agent=agent,
                           data={"reason": "failed", "detail": str(exc)[:200]})
        return CommandResult(provider_call_id=call.pcid)

    async def _do_originate(self, cmd: Originate) -> CommandResult:
        pcid = f"cti-o-{cmd.call_id}"
        call = _Call(pcid=pcid, call_id=cmd.call_id, direction=Direction.OUTBOUND, customer=None,
                     from_number=cmd.caller_id, to_number=cmd.to_number,
                     agent=cmd.agent or self.ctx.agent_endpoints.get(cmd.agent_endpoint))
        self._calls[pcid] = call
        self._legs[pcid] = (pcid, "origin")
        self._emit(call, EventKind.CREATED, self.clock.now())
        variables = {"origination_uuid": pcid, "originate_timeout": cmd.timeout_s,
                     "origination_caller_id_number": cmd.to_number, "cti_call_id": cmd.call_id,
                     "cti_agent": call.agent or ""}
        try:
            await self._bgapi(wire.originate(cmd.agent_endpoint, "&park()", variables), pcid)
        except AdapterError:
            self._legs.pop(pcid, None)
            self._end(call, EndCause.FAILED, self._now(call))
            raise
        return CommandResult(provider_call_id=pcid)

    async def _do_hangup(self, cmd: Hangup) -> CommandResult:
        call = self._call(cmd.provider_call_id)
        for leg in (call.customer, call.pcid if call.direction is Direction.OUTBOUND else None):
            if leg:
                await self._quiet(f"uuid_kill {leg}")
        return CommandResult(provider_call_id=call.pcid)

    async def _hold(self, pcid: str, on: bool) -> CommandResult:
        call = self._call(pcid)
        if call.customer is None or not call.answered:
            raise AdapterError(f"call {pcid} is not connected to an agent")
        # uuid_hold on the customer's leg: FreeSWITCH plays hold music to them
        await self._api_ok(f"uuid_hold {call.customer}" if on else f"uuid_hold off {call.customer}")
        return CommandResult(provider_call_id=pcid)

    async def _do_hold(self, cmd: Hold) -> CommandResult:
        return await self._hold(cmd.provider_call_id, True)

    async def _do_unhold(self, cmd: Unhold) -> CommandResult:
        return await self._hold(cmd.provider_call_id, False)

    async def _do_blindtransfer(self, cmd: BlindTransfer) -> CommandResult:
        call = self._call(cmd.provider_call_id)
        if call.customer is None:
            raise AdapterError(f"call {call.pcid} has no customer leg yet")
        await self._api_ok(f"uuid_transfer {call.customer} {cmd.target} XML {self.transfer_context}")
        # the customer's leg now belongs to the dialplan: keep it, drop ours
        now = self._now(call)
        self._legs.pop(call.customer, None)
        self._emit(call, EventKind.TRANSFERRED, now, data={"target": cmd.target})
        self._end(call, EndCause.TRANSFERRED, now)
        await self._teardown(call)
        return CommandResult(provider_call_id=call.pcid)

    async def _do_attendedtransfer(self, cmd: AttendedTransfer) -> CommandResult:
        """consult: the customer is put on hold (parked) and the agent bridged to `target`;
        complete: the customer is bridged to the target and the agent's leg let go;
        cancel: the target is hung up and the agent bridged back."""
        call = self._call(cmd.provider_call_id)
        if call.agent_leg is None or call.customer is None or not call.answered:
            raise AdapterError(f"call {call.pcid} is not connected to an agent")
        if cmd.step == "consult":
            if call.consult_leg is not None:
                raise AdapterError(f"call {call.pcid} already has a consultation in progress")
            leg = f"cti-t-{uuid.uuid4().hex[:12]}"
            endpoint = cmd.target if "/" in cmd.target else self.dial_template.format(number=cmd.target)
            # without park_after_bridge the customer would be hung up when the agent leaves
            await self._api_ok(f"uuid_setvar {call.customer} park_after_bridge true")
            await self._api_ok(f"uuid_hold {call.customer}")
            self._legs[leg] = (call.pcid, "consult")
            call.consult_leg, call.consult_target, call.consult_answered = leg, cmd.target, False
            variables = {"origination_uuid": leg, "originate_timeout": 30, "cti_call_id": call.call_id,
                         "cti_agent": self.ctx.agent_endpoints.get(cmd.target, ""),
                         "origination_caller_id_number": call.from_number or ""}
            try:
                await self._bgapi(wire.originate(endpoint, "&park()", variables), leg)
            except AdapterError:
                self._legs.pop(leg, None)
                await self._consult_back(call)
                raise
            return CommandResult(provider_call_id=call.pcid, detail={"consult_leg": leg})
        if call.consult_leg is None:
            raise AdapterError(f"call {call.pcid} has no consultation to {cmd.step}")
        if cmd.step == "cancel":
            leg = call.consult_leg
            call.released.add(leg)
            await self._quiet(f"uuid_kill {leg}")
            await self._consult_back(call)
            return CommandResult(provider_call_id=call.pcid)
        if cmd.step != "complete":
            raise AdapterError(f"unknown attended transfer step {cmd.step!r} (consult|complete|cancel)")
        if not call.consult_answered:
            raise AdapterError(f"{call.consult_target} has not answered yet")
        leg, old = call.consult_leg, call.agent_leg
        await self._api_ok(f"uuid_bridge {call.customer} {leg}")
        await self._quiet(f"uuid_hold off {call.customer}")
        call.released.add(old)
        new_agent = self.ctx.agent_endpoints.get(call.consult_target or "")
        call.agent_leg, call.consult_leg, call.consult_answered = leg, None, False
        self._legs[leg] = (call.pcid, "agent")
        self._emit(call, EventKind.TRANSFERRED, self._now(call), "attended", leg, agent=new_agent,
                   data={"target": call.consult_target, "attended": True})
        if new_agent:
            call.agent = new_agent
        await self._quiet(f"uuid_kill {old}")
        return CommandResult(provider_call_id=call.pcid)

    async def _consult_back(self, call: _Call) -> None:
        call.consult_leg, call.consult_answered = None, False
        if call.customer and call.agent_leg:
            await self._quiet(f"uuid_bridge {call.customer} {call.agent_leg}")
            await self._quiet(f"uuid_hold off {call.customer}")

    async def _do_record(self, cmd: Record) -> CommandResult:
        call = self._call(cmd.provider_call_id)
        if call.customer is None or not call.answered:
            raise AdapterError(f"call {call.pcid} is not connected; nothing to record")
        now = self._now(call)
        if cmd.action == "start":
            path = f"{self.recordings_dir}/{call.call_id}-{len(call.recordings) + 1}.wav"
            if self.record_stereo:
                # one voice per channel transcribes better than a mix and names the speakers:
                # on the customer's leg the read side (left) is the customer, the write side
                # (right) what the customer hears, the agent
                await self._api_ok(f"uuid_setvar {call.customer} RECORD_STEREO true")
                call.stereo_recordings.add(path)
            await self._api_ok(f"uuid_record {call.customer} start {path}")
            return CommandResult(provider_call_id=call.pcid, detail={"recording": path})
        verb = {"stop": "stop", "pause": "mask", "resume": "unmask"}.get(cmd.action)
        if verb is None:
            raise AdapterError(f"unknown record action {cmd.action!r} (start|stop|pause|resume)")
        path = call.live_recording
        if path is None:
            raise AdapterError(f"call {call.pcid} is not being recorded")
        await self._api_ok(f"uuid_record {call.customer} {verb} {path}")
        if cmd.action == "pause":  # mask/unmask fire no event of their own
            self._emit(call, EventKind.RECORDING_PAUSED, now, path, now.isoformat())
        elif cmd.action == "resume":
            self._emit(call, EventKind.RECORDING_RESUMED, now, path, now.isoformat())
        return CommandResult(provider_call_id=call.pcid, detail={"recording": path})

    async def _do_play(self, cmd: Play) -> CommandResult:
        call = self._call(cmd.provider_call_id)
        if call.customer is None:
            raise AdapterError(f"call {call.pcid} has no customer leg yet")
        await self._api_ok(f"uuid_broadcast {call.customer} {cmd.media} aleg")
        return CommandResult(provider_call_id=call.pcid)

    async def _do_voicemaildrop(self, cmd: VoicemailDrop) -> CommandResult:
        call = self._call(cmd.provider_call_id)
        if call.customer is None or not call.answered:
            raise AdapterError(f"call {call.pcid} is not answered; no voicemail to drop into")
        call.voicemail = True
        call.voicemail_media = cmd.media
        if call.agent_leg and call.agent_leg != call.customer:
            await self._quiet(f"uuid_kill {call.agent_leg}")
        await self._api_ok(f"uuid_broadcast {call.customer} {cmd.media} aleg")
        return CommandResult(provider_call_id=call.pcid)

    async def _do_senddtmf(self, cmd: SendDtmf) -> CommandResult:
        call = self._call(cmd.provider_call_id)
        if call.customer is None:
            raise AdapterError(f"call {call.pcid} has no customer leg yet")
        await self._api_ok(f"uuid_send_dtmf {call.customer} {cmd.digits}")
        return CommandResult(provider_call_id=call.pcid)

    async def _do_monitor(self, cmd: Monitor) -> CommandResult:
        if cmd.mode not in ("listen", "whisper", "barge", "stop"):
            raise AdapterError(f"unknown monitor mode {cmd.mode!r}")
        now = self.clock.now()
        if cmd.session_id is not None:
            mon = self._monitors.get(cmd.session_id)
            if mon is None:
                raise CallNotFound(f"no monitor session {cmd.session_id!r}")
            if cmd.mode == "stop":
                await self._teardown_monitor(mon, now)
            elif cmd.mode != mon.mode:
                call = self._call(mon.pcid)
                now = self._now(call)
                await self._api_ok(f"uuid_recv_dtmf {mon.supervisor} {_MODE_DTMF[cmd.mode]}")
                if mon.started:
                    self._emit(call, EventKind.MONITOR_STOPPED, now, mon.session_id, mon.mode,
                               data={"mode": mon.mode, "session_id": mon.session_id})
                    self._emit(call, EventKind.MONITOR_STARTED, now, mon.session_id, cmd.mode,
                               data={"mode": cmd.mode, "session_id": mon.session_id})
                mon.mode = cmd.mode
            return CommandResult(provider_call_id=mon.pcid, session_id=mon.session_id)
        if cmd.mode == "stop":
            raise AdapterError("monitor stop needs a session_id")
        call = self._call(cmd.provider_call_id)
        if call.agent_leg is None or not call.answered:
            raise AdapterError(f"call {call.pcid} is not connected to an agent; nothing to monitor")
        session = uuid.uuid4().hex[:12]
        sup = f"cti-s-{session}"
        mon = _Monitor(session_id=session, pcid=call.pcid, mode=cmd.mode, supervisor=sup)
        self._monitors[session] = mon
        call.monitors[session] = mon
        self._legs[sup] = (call.pcid, "supervisor")
        variables: dict[str, object] = {"origination_uuid": sup, "originate_timeout": 30,
                                        "eavesdrop_enable_dtmf": "true", "cti_call_id": call.call_id,
                                        **_MODE_VARS[cmd.mode]}
        try:
            await self._bgapi(wire.originate(cmd.supervisor_endpoint, f"&eavesdrop({call.agent_leg})",
                                             variables), sup)
        except AdapterError:
            self._legs.pop(sup, None)
            await self._teardown_monitor(mon, now)
            raise
        return CommandResult(provider_call_id=call.pcid, session_id=session)
