"""Asterisk adapter over ARI: a Stasis application driven through REST + the events WebSocket.

Call model (what Asterisk sees):
- inbound: the dialplan sends the customer's channel to `Stasis(<app>)`; `Connect` originates
  one channel per agent endpoint into the same app, and the first that answers is put with
  the customer into a mixing bridge `cti-b-<customer channel>`;
- click-to-call: the agent's endpoint is originated first (`cti-o-<call id>`), and once it
  answers the customer (`cti-c-<call id>`, dialled through `dial_template`); both are bridged;
- monitor: the supervisor's endpoint is originated (`cti-s-<session>`); once it answers, a snoop
  channel on the agent's leg (spy both, whisper out for whisper) and the supervisor go into a
  bridge `cti-m-<session>`; barge adds the supervisor to the call's bridge.

Facts are emitted as `CallEvent`s with ids derived from the provider's own facts (channel
ids, recording names, event timestamps), so a replayed event or a resync after a reconnect
yields the same ids. Config keys (`[[providers]]`): url, username, password, app, and
optionally dial_template (`PJSIP/{number}@trunk`), transfer_context, backoff_initial_s,
backoff_max_s, keepalive_s, keepalive_timeout_s, recording_wait_s.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import aiohttp
import structlog
import websockets

from cti.adapters.asterisk import wire
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
from cti.clock import SystemClock
from cti.model import CallEvent, Direction, EndCause, EventKind, make_call_id, make_event_id
from cti.phone import normalize as normalize_number

log = structlog.get_logger("cti.adapters.asterisk")

_STOP = object()


@dataclass
class _Monitor:
    session_id: str
    pcid: str
    mode: str
    supervisor: str                # supervisor channel id
    endpoint: str = ""             # the supervisor's endpoint
    snoop: str | None = None
    bridge: str | None = None
    answered: bool = False
    started: bool = False


@dataclass
class _Call:
    pcid: str
    call_id: str
    direction: Direction
    customer: str | None                       # customer channel id
    from_number: str | None = None
    to_number: str | None = None
    queue: str | None = None
    agent: str | None = None
    agent_leg: str | None = None               # the answered agent channel
    ringing_legs: dict[str, str] = field(default_factory=dict)   # channel id -> agent
    bridge: str | None = None
    answered: bool = False
    held: bool = False
    ended: bool = False
    ended_at: datetime | None = None
    transfer_target: str | None = None
    voicemail: bool = False
    voicemail_playback: str | None = None
    released: set[str] = field(default_factory=set)   # agent legs we hung up on purpose
    consult_leg: str | None = None             # attended transfer: the consulted party's channel
    consult_target: str | None = None
    consult_answered: bool = False
    customer_cause: int | None = None
    recordings: list[str] = field(default_factory=list)
    live_recording: str | None = None
    recording_done: dict[str, asyncio.Event] = field(default_factory=dict)  # name -> finished or failed
    monitors: dict[str, _Monitor] = field(default_factory=dict)
    emitted: set[str] = field(default_factory=set)
    last_at: datetime | None = None            # latest provider time seen for this call


@register("asterisk")
class AsteriskAdapter:
    type: ClassVar[str] = "asterisk"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({
        Capability.CONNECT, Capability.ORIGINATE, Capability.HANGUP, Capability.HOLD,
        Capability.BLIND_TRANSFER, Capability.ATTENDED_TRANSFER, Capability.RECORD,
        Capability.RECORD_PAUSE, Capability.PLAY,
        Capability.VOICEMAIL_DROP, Capability.MONITOR_LISTEN, Capability.MONITOR_WHISPER,
        Capability.MONITOR_BARGE, Capability.TAKEOVER, Capability.DTMF,
    })

    def __init__(self, settings: Any, ctx: AdapterContext) -> None:
        opts = settings.options
        for key in ("url", "username", "password", "app"):
            if not opts.get(key):
                raise ValueError(f"provider {settings.name!r} (asterisk): missing option {key!r}")
        self.name: str = settings.name
        self.tenant: str = ctx.tenant
        self.ctx = ctx
        self.clock = ctx.clock or SystemClock()
        self.base = str(opts["url"]).rstrip("/") + "/ari"
        self.username = str(opts["username"])
        self.password = str(opts["password"])
        self.app = str(opts["app"])
        self.dial_template = str(opts.get("dial_template") or "PJSIP/{number}@trunk")
        self.transfer_context = str(opts.get("transfer_context") or "from-internal")
        self.backoff_initial = float(opts.get("backoff_initial_s", 0.5))
        self.backoff_max = float(opts.get("backoff_max_s", 30.0))
        self.keepalive_s = float(opts.get("keepalive_s", 15.0))       # websocket ping interval
        self.keepalive_timeout_s = float(opts.get("keepalive_timeout_s", 5.0))
        self.recording_wait_s = float(opts.get("recording_wait_s", 10.0))  # for RecordingFinished
        self.metrics: Any = None  # set by the app (cti.metrics.Metrics)
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._ready = False
        self._calls: dict[str, _Call] = {}
        self._legs: dict[str, tuple[str, str]] = {}   # channel id -> (pcid, role)
        self._monitors: dict[str, _Monitor] = {}
        # ended calls are kept a while for late events (recordings, duplicates), then forgotten
        self._ended: OrderedDict[str, None] = OrderedDict()
        self.keep_ended = int(opts.get("keep_ended", 1000))
        self._session: aiohttp.ClientSession | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.connections = 0  # successful (re)connections, for tests and metrics

    # ---- lifecycle -------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self) -> None:
        if self._supervisor is None:
            self._session = aiohttp.ClientSession(
                headers=self._auth_header(),
                timeout=aiohttp.ClientTimeout(total=10),
            )
            self._supervisor = asyncio.create_task(self._run(), name=f"ari-{self.name}")

    async def stop(self) -> None:
        self._ready = False
        tasks = [t for t in (self._supervisor, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._supervisor = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._queue.put_nowait(_STOP)

    async def events(self) -> AsyncIterator[CallEvent]:
        while True:
            item = await self._queue.get()
            if item is _STOP:
                return
            yield item

    # ---- connection supervisor ---------------------------------------------------------

    def _ws_url(self) -> str:
        # credentials go in the Authorization header (ARI accepts Basic auth on the upgrade):
        # an `api_key=` in the URL would reach proxies' access logs and every logged URL
        ws = self.base.replace("http://", "ws://").replace("https://", "wss://")
        return f"{ws}/events?app={quote(self.app)}&subscribeAll=false"

    def _auth_header(self) -> dict[str, str]:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    async def _run(self) -> None:
        """One reconnect supervisor: backoff with jitter, not ready during the gap, resync."""
        attempt = 0
        while True:
            try:
                async with websockets.connect(
                    self._ws_url(), additional_headers=self._auth_header(), open_timeout=5,
                    ping_interval=self.keepalive_s,
                    ping_timeout=self.keepalive_timeout_s, close_timeout=self.keepalive_timeout_s,
                    max_size=2**22,
                ) as ws:
                    # Connected before resync: events that race the resync are buffered by the
                    # socket and deduplicated by their deterministic ids.
                    await self._resync()
                    attempt = 0
                    self.connections += 1
                    self._ready = True
                    log.info("ari_connected", provider=self.name)
                    async for message in ws:
                        await self.handle_message(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("ari_disconnected", provider=self.name, error=str(exc)[:200])
            self._ready = False
            if self.metrics is not None:
                self.metrics.adapter_reconnects.labels(self.name).inc()
            delay = min(self.backoff_max, self.backoff_initial * (2 ** min(attempt, 16)))
            attempt += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def handle_message(self, message: str | bytes) -> None:
        """Parse and apply one WebSocket message; a bad one is logged and counted, never fatal."""
        try:
            ev = wire.parse_event(message)
        except wire.WireError as exc:
            self._wire_error(str(exc), message)
            return
        if ev.type == "ApplicationReplaced":
            self._replaced()
            return
        if ev.type not in wire.HANDLED:
            return
        try:
            await self._apply(ev)
        except wire.WireError as exc:  # a field read on use (bridge, args, caller...) was malformed
            self._wire_error(f"{ev.type}: {exc}", message)
        except AdapterError as exc:  # a follow-up request failed (the channel left meanwhile...)
            log.warning("ari_action_failed", provider=self.name, type=ev.type, error=str(exc)[:200])
        except Exception as exc:  # one bad event must not stop the adapter
            log.exception("ari_event_failed", provider=self.name, type=ev.type, error=str(exc))
            self._wire_error(f"{ev.type}: {exc}", message)

    def _replaced(self) -> None:
        """Another client subscribed to our application: Asterisk now sends it every event and
        this socket gets none. Not ready until we reconnect (taking it back at once would
        only make two clients steal it from each other)."""
        self._ready = False
        log.error("ari_application_replaced", provider=self.name, app=self.app)

    def _wire_error(self, reason: str, message: str | bytes) -> None:
        snippet = message[:200] if isinstance(message, str) else message[:200].decode("utf-8", "replace")
        log.warning("ari_wire_error", provider=self.name, reason=reason, snippet=snippet)
        if self.metrics is not None:
            self.metrics.wire_errors.labels(self.name).inc()

    # ---- REST ----------------------------------------------------------------------------

    async def _rest(self, req: wire.Request, *, ok404: bool = False) -> Any:
        if self._session is None:
            raise AdapterError("asterisk adapter is not started")
        url = self.base + req.path
        try:
            async with self._session.request(req.method, url, params=req.params, json=req.body) as resp:
                if resp.status == 404 and ok404:
                    return None
                if resp.status >= 400:
                    raise _rest_error(req, resp.status, await resp.read())
                if resp.content_type == "application/json":
                    return await resp.json()
                return await resp.read()
        except aiohttp.ClientError as exc:
            raise AdapterError(f"ARI {req.method} {req.path} failed: {exc}") from exc

    async def _quiet(self, req: wire.Request) -> None:
        """Best-effort cleanup call (a channel that is already gone is fine)."""
        try:
            await self._rest(req, ok404=True)
        except AdapterError as exc:
            log.info("ari_cleanup_failed", provider=self.name, path=req.path, error=str(exc)[:120])

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- emitting ------------------------------------------------------------------------

    def _emit(self, call: _Call, kind: EventKind, at: datetime, *id_parts: object,
              agent: str | None = None, data: dict[str, Any] | None = None) -> None:
        eid = make_event_id(self.name, call.pcid, kind.value, *id_parts)
        if eid in call.emitted:
            return
        call.emitted.add(eid)
        if call.last_at is None or at > call.last_at:
            call.last_at = at
        self._queue.put_nowait(CallEvent(
            event_id=eid, provider=self.name, provider_call_id=call.pcid, call_id=call.call_id,
            kind=kind, occurred_at=at, tenant=self.tenant, agent=agent or call.agent,
            queue=call.queue, direction=call.direction, from_number=call.from_number,
            to_number=call.to_number, data=data or {},
        ))

    def _now(self, call: _Call) -> datetime:
        """Now, for a fact we observe ourselves: after the call's latest provider timestamp."""
        return after_latest(call.last_at, self.clock.now())

    def _number(self, raw: str | None) -> str | None:
        return normalize_number(raw, self.ctx.default_region) if raw else None

    def _queue_for(self, number: str | None, raw: str | None) -> str | None:
        qn = self.ctx.queue_numbers
        return qn.get(number or "") or qn.get(raw or "")

    def _agent_for(self, endpoint: str) -> str | None:
        return self.ctx.agent_endpoints.get(endpoint)

    # ---- event handling ------------------------------------------------------------------

    async def _apply(self, ev: wire.AriEvent) -> None:
        ch = ev.channel
        t = ev.type
        if t == "Dial":
            if ev.peer is not None:
                self._on_dial(ev, ev.peer)
            return
        if t in ("RecordingStarted", "RecordingFinished", "RecordingFailed"):
            self._on_recording(ev)
            return
        if t in ("PlaybackStarted", "PlaybackFinished"):
            await self._on_playback(ev)
            return
        if ch is None:
            return
        if t == "StasisStart":
            await self._on_stasis_start(ev, ch)
        elif t == "ChannelStateChange":
            if ch.state == "Ringing":
                self._on_ringing(ch.id, ev.timestamp)
        elif t == "ChannelHangupRequest":
            if ev.cause is not None and ch.id in self._legs:
                call = self._calls.get(self._legs[ch.id][0])
                if call is not None and ch.id == call.customer and call.customer_cause is None:
                    call.customer_cause = ev.cause
        elif t == "ChannelDestroyed":
            await self._on_destroyed(ch.id, ev.cause, ev.timestamp)
        elif t == "StasisEnd":
            await self._on_stasis_end(ch.id, ev.timestamp)
        elif t in ("ChannelHold", "ChannelUnhold"):  # a phone put itself on hold (or took it off)
            call = self._call_of(ch.id)
            if call is not None:
                self._set_held(call, t == "ChannelHold", ev.timestamp)
        elif t == "ChannelEnteredBridge":
            self._on_entered_bridge(ch.id, ev.bridge_id, ev.timestamp)
        elif t == "ChannelDtmfReceived":
            call = self._call_of(ch.id)
            if call is not None and ev.digit:
                self._emit(call, EventKind.DTMF, ev.timestamp, ch.id, ev.timestamp.isoformat(),
                           data={"digit": ev.digit, "leg": self._legs[ch.id][1]})

    def _call_of(self, channel_id: str) -> _Call | None:
        leg = self._legs.get(channel_id)
        return self._calls.get(leg[0]) if leg else None

    async def _on_stasis_start(self, ev: wire.AriEvent, ch: wire.AriChannel) -> None:
        leg = self._legs.get(ch.id)
        if leg is None:
            if ch.id.startswith("cti-"):
                log.info("ari_unknown_own_channel", provider=self.name, channel=ch.id)
                return
            self._new_inbound(ch, ev.timestamp)
            return
        pcid, role = leg
        call = self._calls.get(pcid)
        if role == "supervisor":
            mon = self._monitors.get(ch.id.removeprefix("cti-s-"))
            if mon is not None and not mon.answered:  # (a repeat must not add a second snoop)
                mon.answered = True
                await self._setup_monitor(mon, ev.timestamp)
            return
        if call is None or call.ended:
            await self._quiet(wire.hangup(ch.id))
            return
        if role == "agent":
            await self._agent_answered(call, ch.id)
        elif role == "origin":  # click-to-call: the agent picked up, now dial the customer
            await self._dial_customer(call)
        elif role == "customer" and call.direction is Direction.OUTBOUND:
            await self._rest(wire.add_channel(call.bridge or f"cti-b-{call.pcid}", ch.id))
        elif role == "consult" and ch.id == call.consult_leg:
            call.consult_answered = True
            await self._rest(wire.add_channel(f"cti-x-{call.pcid}", ch.id))

    def _new_inbound(self, ch: wire.AriChannel, at: datetime) -> None:
        if ch.id in self._calls:
            return
        raw_to = ch.exten
        to_number = self._number(raw_to)
        call = _Call(
            pcid=ch.id, call_id=make_call_id(self.tenant, self.name, ch.id), direction=Direction.INBOUND,
            customer=ch.id, from_number=self._number(ch.caller_number), to_number=to_number,
            queue=self._queue_for(to_number, raw_to),
        )
        self._calls[ch.id] = call
        self._legs[ch.id] = (ch.id, "customer")
        created = ch.creationtime or at
        self._emit(call, EventKind.CREATED, created)
        if call.queue:
            self._emit(call, EventKind.QUEUED, at)

    def _on_dial(self, ev: wire.AriEvent, peer: wire.AriChannel) -> None:
        status = (ev.dialstatus or "").upper()
        if status == "RINGING":
            self._on_ringing(peer.id, ev.timestamp)
        elif status in wire.DIAL_FAILED:
            call = self._call_of(peer.id)
            if call is None:
                return
            role = self._legs[peer.id][1]
            if role == "agent":
                agent = call.ringing_legs.get(peer.id)
                self._emit(call, EventKind.NO_ANSWER, ev.timestamp, peer.id, agent=agent,
                           data={"reason": status.lower()})
            elif role == "customer" and call.direction is Direction.OUTBOUND and status == "BUSY":
                call.customer_cause = 17

    def _on_ringing(self, channel_id: str, at: datetime) -> None:
        leg = self._legs.get(channel_id)
        if leg is None:
            return
        call = self._calls.get(leg[0])
        if call is None or call.ended:
            return
        if leg[1] == "agent":
            self._emit(call, EventKind.RINGING, at, channel_id, agent=call.ringing_legs.get(channel_id))
        elif leg[1] == "origin":
            self._emit(call, EventKind.RINGING, at, channel_id, agent=call.agent)

    async def _agent_answered(self, call: _Call, leg_id: str) -> None:
        if call.agent_leg == leg_id:
            # its StasisStart again: the resync already handled it (the event raced the
            # resync), or it was delivered twice. Hanging up would drop the connected agent.
            return
        if call.agent_leg is not None or call.customer is None or leg_id in call.released:
            # ring-all: somebody else was first (or this leg already failed to be bridged)
            await self._quiet(wire.hangup(leg_id))
            return
        previous_agent = call.agent
        call.agent_leg = leg_id
        call.agent = call.ringing_legs.get(leg_id, call.agent)
        bridge = call.bridge or f"cti-b-{call.pcid}"
        call.bridge = bridge
        try:
            await self._rest(wire.answer(call.customer))
            await self._rest(wire.create_bridge(bridge))
            await self._rest(wire.add_channel(bridge, call.customer, leg_id))
        except AdapterError as exc:
            await self._agent_not_bridged(call, leg_id, previous_agent, exc)
            return
        for other in [c for c in call.ringing_legs if c != leg_id]:
            await self._quiet(wire.hangup(other, "normal"))

    async def _agent_not_bridged(self, call: _Call, leg_id: str, previous_agent: str | None,
                                 exc: AdapterError) -> None:
        """The agent picked up but answering the customer or bridging them failed. Left alone,
        the agent would sit on a silent line until the caller hangs up, and the call would
        look connected to nobody. So the agent's leg is let go and reported as an offer that
        failed (no_answer, like an originate that failed): the router offers the call again,
        the customer keeps waiting, and other ring-all legs go on ringing. No retry: a refusal
        (404/409/500) would come again, and after a dropped connection the resync takes over."""
        agent = call.ringing_legs.get(leg_id)
        log.warning("ari_agent_bridge_failed", provider=self.name, call=call.pcid, agent=agent,
                    error=str(exc)[:200])
        call.agent_leg, call.agent = None, previous_agent
        bridge, call.bridge = call.bridge, None  # a next agent sets it up afresh
        call.released.add(leg_id)  # its ChannelDestroyed is not another no_answer
        self._emit(call, EventKind.NO_ANSWER, self._now(call), leg_id, agent=agent,
                   data={"reason": "failed", "detail": str(exc)[:200]})
        await self._quiet(wire.hangup(leg_id))
        if bridge is not None:
            await self._quiet(wire.destroy_bridge(bridge))

    async def _dial_customer(self, call: _Call) -> None:
        if call.customer is not None:
            return  # already dialled (a repeated StasisStart): a second originate would end the call
        bridge = f"cti-b-{call.pcid}"
        call.bridge = bridge
        call.agent_leg = call.pcid
        customer = f"cti-c-{call.call_id}"
        call.customer = customer
        self._legs[customer] = (call.pcid, "customer")
        await self._rest(wire.create_bridge(bridge))
        await self._rest(wire.add_channel(bridge, call.pcid))
        endpoint = self.dial_template.format(number=call.to_number)
        try:
            await self._rest(wire.originate(endpoint, self.app, "customer", customer,
                                            caller_id=call.from_number, timeout_s=60))
        except AdapterError as exc:
            log.warning("ari_customer_dial_failed", provider=self.name, error=str(exc)[:200])
            self._end(call, EndCause.FAILED, self._now(call))
            await self._quiet(wire.hangup(call.pcid))

    def _on_entered_bridge(self, channel_id: str, bridge_id: str | None, at: datetime) -> None:
        call = self._call_of(channel_id)
        if call is None or call.ended or bridge_id is None or bridge_id != call.bridge:
            return
        role = self._legs[channel_id][1]
        if call.direction is Direction.INBOUND and role == "agent" and channel_id == call.agent_leg:
            call.answered = True
            self._emit(call, EventKind.ANSWERED, at, agent=call.agent)
        elif call.direction is Direction.OUTBOUND and role == "customer":
            call.answered = True
            self._emit(call, EventKind.ANSWERED, at, agent=call.agent)

    async def _on_stasis_end(self, channel_id: str, at: datetime) -> None:
        call = self._call_of(channel_id)
        if call is None or call.ended or channel_id != call.customer or call.transfer_target is None:
            return
        # the customer left our application for the transfer target: the call left our system
        # (the customer's channel lives on in the dialplan: never hang it up from here)
        self._legs.pop(channel_id, None)
        self._emit(call, EventKind.TRANSFERRED, at, data={"target": call.transfer_target})
        self._end(call, EndCause.TRANSFERRED, at)
        await self._teardown(call)

    async def _on_destroyed(self, channel_id: str, cause: int | None, at: datetime) -> None:
        leg = self._legs.pop(channel_id, None)
        if leg is None:
            return
        pcid, role = leg
        if role == "supervisor":
            mon = self._monitors.get(channel_id.removeprefix("cti-s-"))
            if mon is not None:
                await self._teardown_monitor(mon, at)
            return
        if role == "snoop":
            return
        call = self._calls.get(pcid)
        if call is None or (channel_id in call.released and role != "agent"):
            return
        if role == "consult":
            if channel_id == call.consult_leg and not call.ended:
                await self._consult_back(call, self._now(call))  # the consulted party left
            return
        if role == "agent":
            agent = call.ringing_legs.pop(channel_id, None)
            if channel_id in call.released:
                return
            if channel_id != call.agent_leg:
                if not call.ended:
                    self._emit(call, EventKind.NO_ANSWER, at, channel_id, agent=agent,
                               data={"reason": wire.end_cause(cause).value})
                return
            # the agent hung up a connected call (not for a voicemail drop)
            if not call.ended and not call.voicemail and call.customer:
                await self._quiet(wire.hangup(call.customer))
            return
        if call.direction is Direction.INBOUND:  # the customer's channel is gone
            if call.transfer_target is not None:
                self._emit(call, EventKind.TRANSFERRED, at, data={"target": call.transfer_target})
                self._end(call, EndCause.TRANSFERRED, at)
            elif call.voicemail:
                self._end(call, EndCause.VOICEMAIL, at)
            else:
                self._end(call, EndCause.NORMAL if call.answered else EndCause.CALLER_HANGUP, at)
            await self._teardown(call)
            return
        # click-to-call legs
        if role == "origin":
            if not call.ended:
                self._end(call, EndCause.NORMAL if call.answered else EndCause.CANCELED, at)
            await self._teardown(call)
        elif role == "customer":
            if not call.ended:
                if call.answered:
                    cause_ = EndCause.VOICEMAIL if call.voicemail else EndCause.NORMAL
                else:
                    c = wire.end_cause(call.customer_cause or cause)
                    cause_ = c if c in (EndCause.BUSY, EndCause.NO_ANSWER) else (
                        EndCause.CANCELED if c is EndCause.NORMAL else c)
                self._end(call, cause_, at)
            await self._teardown(call)

    def _end(self, call: _Call, cause: EndCause, at: datetime) -> None:
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
                self._emit(call, EventKind.MONITOR_STOPPED, at, mon.session_id, mon.mode, data={"mode": mon.mode})
        self._emit(call, EventKind.ENDED, at, data={"cause": cause.value})
        if call.recordings:
            self._spawn(self._recordings_ready(call, list(call.recordings)))

    def _forget(self, pcid: str) -> None:
        self._calls.pop(pcid, None)
        for leg in [leg for leg, (p, _r) in self._legs.items() if p == pcid]:
            del self._legs[leg]

    async def _teardown(self, call: _Call) -> None:
        """Hang up whatever is left of an ended call (legs, monitors, its bridge)."""
        for mon in list(call.monitors.values()):
            await self._teardown_monitor(mon, call.ended_at or self.clock.now())
        for ch_id, (pcid, _role) in list(self._legs.items()):
            if pcid == call.pcid:
                await self._quiet(wire.hangup(ch_id))
        if call.bridge:
            await self._quiet(wire.destroy_bridge(call.bridge))
            call.bridge = None

    # ---- recordings and playbacks --------------------------------------------------------

    def _on_recording(self, ev: wire.AriEvent) -> None:
        name = wire.recording_name(ev.recording)
        kind, ident = wire.target_of(str(ev.recording.get("target_uri") or ""))
        call = None
        if kind == "bridge":
            call = next((c for c in self._calls.values() if c.bridge == ident or f"cti-b-{c.pcid}" == ident),
                        None)
        elif kind == "channel":
            call = self._call_of(ident)
        if call is None:
            return
        done = call.recording_done.setdefault(name, asyncio.Event())
        if ev.type == "RecordingStarted":
            if name not in call.recordings:
                call.recordings.append(name)
            call.live_recording = name
            self._emit(call, EventKind.RECORDING_STARTED, ev.timestamp, name, data={"recording": name})
        else:
            done.set()
            if call.live_recording == name:
                call.live_recording = None
            self._emit(call, EventKind.RECORDING_STOPPED, ev.timestamp, name,
                       data={"recording": name, "failed": ev.type == "RecordingFailed",
                             "duration_s": ev.recording.get("duration")})

    async def _recordings_ready(self, call: _Call, names: list[str]) -> None:
        """Once the call is over, fetch each stored recording and say where it is."""
        for name in names:
            await self._recording_finished(call, name)
            req = wire.stored_recording_file(name)
            data: dict[str, Any] = {"recording": name, "url": self.base + req.path}
            try:
                body = await self._rest(req)
                target = Path(self.ctx.storage_dir) / call.call_id / f"{name}.wav"
                await asyncio.to_thread(_write, target, body)
                data["path"] = str(target)
            except (AdapterError, OSError) as exc:
                log.warning("ari_recording_fetch_failed", provider=self.name, recording=name, error=str(exc))
            at = self._now(call)
            self._emit(call, EventKind.RECORDING_READY, at, name, data=data)

    async def _recording_finished(self, call: _Call, name: str) -> None:
        """Wait for RecordingFinished/Failed: a recording still running when the call ends is
        finished by Asterisk after the bridge is gone, and its file is incomplete until then."""
        done = call.recording_done.get(name)
        if done is None or done.is_set():
            return
        try:
            await asyncio.wait_for(done.wait(), self.recording_wait_s)
        except TimeoutError:
            log.warning("ari_recording_not_finished", provider=self.name, recording=name,
                        waited_s=self.recording_wait_s)

    async def _on_playback(self, ev: wire.AriEvent) -> None:
        kind, ident = wire.target_of(str(ev.playback.get("target_uri") or ""))
        call = self._call_of(ident) if kind == "channel" else None
        if call is None or ev.type != "PlaybackFinished":
            return
        pid = str(ev.playback.get("id") or "")
        self._emit(call, EventKind.PLAYBACK_FINISHED, ev.timestamp, pid,
                   data={"media": ev.playback.get("media_uri"), "playback": pid})
        if call.voicemail and pid == call.voicemail_playback and call.customer:
            await self._quiet(wire.hangup(call.customer))

    # ---- monitoring ----------------------------------------------------------------------

    async def _setup_monitor(self, mon: _Monitor, at: datetime) -> None:
        """Connect an answered supervisor to the call; on any failure undo every step."""
        call = self._calls.get(mon.pcid)
        if call is None or call.ended or call.agent_leg is None:
            await self._teardown_monitor(mon, at)
            return
        try:
            if mon.mode in ("barge", "takeover"):
                await self._rest(wire.add_channel(call.bridge or "", mon.supervisor))
            else:
                mon.snoop = f"cti-p-{mon.session_id}-{uuid.uuid4().hex[:6]}"
                self._legs[mon.snoop] = (call.pcid, "snoop")
                whisper = "out" if mon.mode == "whisper" else "none"
                await self._rest(wire.snoop(call.agent_leg, self.app, "snoop", mon.snoop, whisper=whisper))
                mon.bridge = f"cti-m-{mon.session_id}"
                await self._rest(wire.create_bridge(mon.bridge))
                await self._rest(wire.add_channel(mon.bridge, mon.supervisor, mon.snoop))
        except AdapterError as exc:
            log.warning("ari_monitor_failed", provider=self.name, session=mon.session_id, error=str(exc)[:200])
            await self._teardown_monitor(mon, at)
            return
        mon.started = True
        self._emit(call, EventKind.MONITOR_STARTED, at, mon.session_id, mon.mode,
                   data={"mode": mon.mode, "session_id": mon.session_id})
        if mon.mode == "takeover":
            # the supervisor becomes the call's agent; the agent's leg is let go
            old = call.agent_leg
            call.released.add(old)
            self._monitors.pop(mon.session_id, None)
            call.monitors.pop(mon.session_id, None)
            mon.started = False
            call.agent_leg = mon.supervisor
            self._legs[mon.supervisor] = (call.pcid, "agent")
            new_agent = self._agent_for(mon.endpoint)
            self._emit(call, EventKind.TRANSFERRED, at, "takeover", mon.session_id, agent=new_agent,
                       data={"target": mon.endpoint, "takeover": True})
            if new_agent:
                call.agent = new_agent
            await self._quiet(wire.hangup(old))

    async def _undo_media(self, mon: _Monitor) -> None:
        if mon.snoop:
            self._legs.pop(mon.snoop, None)
            await self._quiet(wire.hangup(mon.snoop))
            mon.snoop = None
        if mon.bridge:
            await self._quiet(wire.destroy_bridge(mon.bridge))
            mon.bridge = None

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
        await self._undo_media(mon)
        if self._legs.pop(mon.supervisor, None) is not None:
            await self._quiet(wire.hangup(mon.supervisor))

    # ---- resync --------------------------------------------------------------------------

    async def _resync(self) -> None:
        """After (re)connecting: Asterisk keeps no event backlog, so compare its channels
        with ours. Calls that appeared during the gap are created; channels that vanished
        end their calls; a call bridged during the gap is answered."""
        now = self.clock.now()
        channels = wire.parse_channels(await self._rest(wire.list_channels()))
        bridges = wire.parse_bridges(await self._rest(wire.list_bridges()))
        alive = {c.id for c in channels}
        for c in channels:
            in_app = c.app_name == "Stasis" and c.app_data.split(",")[0] == self.app
            if c.id not in self._legs and in_app and not c.id.startswith("cti-"):
                self._new_inbound(c, now)
        by_id = {c.id: c for c in channels}
        self._adopt_bridged(by_id, bridges, now)
        for ch_id, (pcid, role) in list(self._legs.items()):
            c = by_id.get(ch_id)
            call = self._calls.get(pcid)
            if c is None or c.state != "Up" or call is None or call.ended:
                continue
            # a leg answered while we were away: its StasisStart is lost, so finish its job now
            if role == "agent" and call.agent_leg is None:
                await self._agent_answered(call, ch_id)
            elif role == "origin" and call.customer is None:
                await self._dial_customer(call)
            elif role == "customer" and call.direction is Direction.OUTBOUND and not call.answered:
                await self._rest(wire.add_channel(call.bridge or f"cti-b-{call.pcid}", ch_id))
            elif role == "supervisor":
                mon = self._monitors.get(ch_id.removeprefix("cti-s-"))
                if mon is not None and not mon.answered:
                    mon.answered = True
                    await self._setup_monitor(mon, now)
        for call in list(self._calls.values()):
            if call.ended or not call.bridge or call.answered:
                continue
            members = set(bridges.get(call.bridge, ()))
            if call.direction is Direction.INBOUND and call.agent_leg and call.agent_leg in members:
                self._on_entered_bridge(call.agent_leg, call.bridge, now)
            elif call.direction is Direction.OUTBOUND and call.customer in members:
                self._on_entered_bridge(call.customer or "", call.bridge, now)
        for ch_id in [c for c in self._legs if c not in alive]:
            await self._on_destroyed(ch_id, None, now)

    def _adopt_bridged(self, by_id: dict[str, wire.AriChannel], bridges: dict[str, tuple[str, ...]],
                       now: datetime) -> None:
        """After a restart our own legs are strangers: rebuild connected calls from the
        bridges we named (`cti-b-<call>`), so they end as answered calls, not abandoned ones."""
        for bid, members in bridges.items():
            pcid = bid.removeprefix("cti-b-")
            if pcid == bid or not members:
                continue
            if pcid.startswith("cti-o-") and pcid not in self._calls and pcid in by_id:
                origin = by_id[pcid]
                call = _Call(pcid=pcid, call_id=pcid.removeprefix("cti-o-"), direction=Direction.OUTBOUND,
                             customer=None, agent=self._agent_for(origin.endpoint), bridge=bid,
                             to_number=self._number(origin.caller_number), agent_leg=pcid)
                self._calls[pcid] = call
                self._legs[pcid] = (pcid, "origin")
                customer = f"cti-c-{call.call_id}"
                if customer in by_id:
                    call.customer = customer
                    self._legs[customer] = (pcid, "customer")
                continue
            call = self._calls.get(pcid)
            if call is None or call.direction is not Direction.INBOUND or call.agent_leg is not None:
                continue
            leg = next((m for m in members if m.startswith("cti-a-") and m in by_id), None)
            if leg is not None and call.customer in members:
                call.bridge = bid
                call.agent_leg = leg
                call.agent = self._agent_for(by_id[leg].endpoint)
                call.ringing_legs[leg] = call.agent or ""
                self._legs[leg] = (pcid, "agent")
                log.info("ari_call_adopted", provider=self.name, call=pcid, agent=call.agent)

    # ---- commands ------------------------------------------------------------------------

    def _call(self, pcid: str) -> _Call:
        call = self._calls.get(pcid)
        if call is None or call.ended:
            raise CallNotFound(f"asterisk {self.name}: no active call {pcid!r}")
        return call

    async def execute(self, command: Command) -> CommandResult:
        return await run_handler(self, command, connected=self._ready)

    async def _do_connect(self, cmd: Connect) -> CommandResult:
        call = self._call(cmd.provider_call_id)
        if call.answered:
            raise AdapterError(f"call {cmd.provider_call_id} is already answered")
        for agent, endpoint in cmd.targets:
            leg = f"cti-a-{uuid.uuid4().hex[:10]}"
            self._legs[leg] = (call.pcid, "agent")
            call.ringing_legs[leg] = agent
            try:
                await self._rest(wire.originate(endpoint, self.app, "agent", leg, timeout_s=cmd.timeout_s,
                                                caller_id=call.from_number))
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
                     agent=cmd.agent or self._agent_for(cmd.agent_endpoint))
        self._calls[pcid] = call
        self._legs[pcid] = (pcid, "origin")
        self._emit(call, EventKind.CREATED, self.clock.now())
        try:
            await self._rest(wire.originate(cmd.agent_endpoint, self.app, "origin", pcid,
                                            caller_id=cmd.to_number, timeout_s=cmd.timeout_s))
        except AdapterError:
            self._legs.pop(pcid, None)
            self._end(call, EndCause.FAILED, self._now(call))
            raise
        return CommandResult(provider_call_id=pcid)

    async def _do_hangup(self, cmd: Hangup) -> CommandResult:
        call = self._call(cmd.provider_call_id)
        for ch in (call.customer, call.agent_leg if call.direction is Direction.OUTBOUND else None):
            if ch:
                await self._quiet(wire.hangup(ch))
        return CommandResult(provider_call_id=call.pcid)

    async def _hold(self, pcid: str, on: bool) -> CommandResult:
        call = self._call(pcid)
        if call.agent_leg is None or call.customer is None:
            raise AdapterError(f"call {pcid} is not connected to an agent")
        # ARI's hold indicates hold *toward* one channel's device (chan_pjsip plays it music on
        # hold, dropping the bridge's audio) and publishes no ChannelHold, which only reports a
        # phone that held itself. So the customer's leg is the one held, and we state the fact.
        await self._rest(wire.hold(call.customer, on))
        self._set_held(call, on, self._now(call))
        return CommandResult(provider_call_id=pcid)

    def _set_held(self, call: _Call, on: bool, at: datetime) -> None:
        """Held/resumed once per change, whether the panel or a phone asked for it."""
        if call.ended or call.held == on:
            return
        call.held = on
        self._emit(call, EventKind.HELD if on else EventKind.RESUMED, at, at.isoformat())

    async def _do_hold(self, cmd: Hold) -> CommandResult:
        return await self._hold(cmd.provider_call_id, True)

    async def _do_unhold(self, cmd: Unhold) -> CommandResult:
        return await self._hold(cmd.provider_call_id, False)

    async def _do_blindtransfer(self, cmd: BlindTransfer) -> CommandResult:
        call = self._call(cmd.provider_call_id)
        if call.customer is None:
            raise AdapterError(f"call {call.pcid} has no customer leg yet")
        call.transfer_target = cmd.target
        try:
            if "/" in cmd.target:
                await self._rest(wire.redirect(call.customer, cmd.target))
            else:
                await self._rest(wire.continue_in_dialplan(call.customer, self.transfer_context, cmd.target))
        except AdapterError:
            call.transfer_target = None
            raise
        return CommandResult(provider_call_id=call.pcid)

    async def _do_attendedtransfer(self, cmd: AttendedTransfer) -> CommandResult:
        """consult: the customer waits with music while the agent talks to `target` in a side
        bridge; complete: the target takes the agent's place; cancel: the agent goes back."""
        call = self._call(cmd.provider_call_id)
        if call.agent_leg is None or call.bridge is None or not call.answered:
            raise AdapterError(f"call {call.pcid} is not connected to an agent")
        side = f"cti-x-{call.pcid}"
        if cmd.step == "consult":
            if call.consult_leg is not None:
                raise AdapterError(f"call {call.pcid} already has a consultation in progress")
            leg = f"cti-t-{uuid.uuid4().hex[:10]}"
            endpoint = cmd.target if "/" in cmd.target else self.dial_template.format(number=cmd.target)
            self._legs[leg] = (call.pcid, "consult")
            call.consult_leg, call.consult_target, call.consult_answered = leg, cmd.target, False
            try:
                await self._rest(wire.create_bridge(side))
                await self._rest(wire.add_channel(side, call.agent_leg))  # leaves the customer's bridge
                await self._rest(wire.bridge_moh(call.bridge, True))
                self._emit(call, EventKind.HELD, self._now(call), "consult", leg,
                           data={"reason": "consult", "target": cmd.target})
                await self._rest(wire.originate(endpoint, self.app, "consult", leg, caller_id=call.from_number))
            except AdapterError:
                self._legs.pop(leg, None)
                await self._consult_back(call, self._now(call))
                raise
            return CommandResult(provider_call_id=call.pcid, detail={"consult_leg": leg})
        if call.consult_leg is None:
            raise AdapterError(f"call {call.pcid} has no consultation to {cmd.step}")
        if cmd.step == "cancel":
            leg = call.consult_leg
            await self._consult_back(call, self._now(call))
            self._legs.pop(leg, None)
            await self._quiet(wire.hangup(leg))
            return CommandResult(provider_call_id=call.pcid)
        if cmd.step != "complete":
            raise AdapterError(f"unknown attended transfer step {cmd.step!r} (consult|complete|cancel)")
        if not call.consult_answered:
            raise AdapterError(f"{call.consult_target} has not answered yet")
        leg, old = call.consult_leg, call.agent_leg
        await self._rest(wire.add_channel(call.bridge, leg))  # the target joins the customer
        await self._quiet(wire.bridge_moh(call.bridge, False))
        now = self._now(call)
        self._emit(call, EventKind.RESUMED, now, "consult", leg, data={"reason": "consult"})
        call.released.add(old)
        new_agent = self._agent_for(call.consult_target or "") or None
        call.agent_leg, call.consult_leg, call.consult_answered = leg, None, False
        self._legs[leg] = (call.pcid, "agent")
        self._emit(call, EventKind.TRANSFERRED, now, "attended", leg, agent=new_agent,
                   data={"target": call.consult_target, "attended": True})
        if new_agent:
            call.agent = new_agent
        await self._quiet(wire.hangup(old))
        await self._quiet(wire.destroy_bridge(side))
        return CommandResult(provider_call_id=call.pcid)

    async def _consult_back(self, call: _Call, at: datetime) -> None:
        """End a consultation: the agent returns to the customer, the music stops."""
        leg = call.consult_leg
        call.consult_leg, call.consult_answered = None, False
        if leg is None:
            return
        if call.bridge and call.agent_leg:
            await self._quiet(wire.add_channel(call.bridge, call.agent_leg))
            await self._quiet(wire.bridge_moh(call.bridge, False))
        self._emit(call, EventKind.RESUMED, at, "consult", leg, data={"reason": "consult"})
        await self._quiet(wire.destroy_bridge(f"cti-x-{call.pcid}"))

    async def _do_record(self, cmd: Record) -> CommandResult:
        call = self._call(cmd.provider_call_id)
        now = self._now(call)
        if cmd.action == "start":
            if call.bridge is None or not call.answered:
                raise AdapterError(f"call {call.pcid} is not connected; nothing to record")
            name = f"cti-{call.call_id}-{len(call.recordings) + 1}"
            await self._rest(wire.record_bridge(call.bridge, name))
            return CommandResult(provider_call_id=call.pcid, detail={"recording": name})
        if cmd.action not in ("stop", "pause", "resume"):
            raise AdapterError(f"unknown record action {cmd.action!r} (start|stop|pause|resume)")
        name = call.live_recording
        if name is None:
            raise AdapterError(f"call {call.pcid} is not being recorded")
        await self._rest(wire.live_recording(name, cmd.action))
        if cmd.action == "pause":  # ARI sends no event for pause/unpause
            self._emit(call, EventKind.RECORDING_PAUSED, now, name, now.isoformat())
        elif cmd.action == "resume":
            self._emit(call, EventKind.RECORDING_RESUMED, now, name, now.isoformat())
        return CommandResult(provider_call_id=call.pcid, detail={"recording": name})

    async def _do_play(self, cmd: Play) -> CommandResult:
        call = self._call(cmd.provider_call_id)
        if call.customer is None:
            raise AdapterError(f"call {call.pcid} has no customer leg yet")
        pid = f"cti-play-{uuid.uuid4().hex[:10]}"
        await self._rest(wire.play(call.customer, cmd.media, pid))
        return CommandResult(provider_call_id=call.pcid, detail={"playback": pid})

    async def _do_voicemaildrop(self, cmd: VoicemailDrop) -> CommandResult:
        call = self._call(cmd.provider_call_id)
        if call.customer is None or not call.answered:
            raise AdapterError(f"call {call.pcid} is not answered; no voicemail to drop into")
        call.voicemail = True
        pid = f"cti-vm-{uuid.uuid4().hex[:10]}"
        call.voicemail_playback = pid
        if call.agent_leg and call.agent_leg != call.customer:
            await self._quiet(wire.remove_channel(call.bridge or "", call.agent_leg))
            await self._quiet(wire.hangup(call.agent_leg))
        await self._rest(wire.play(call.customer, cmd.media, pid))
        return CommandResult(provider_call_id=call.pcid, detail={"playback": pid})

    async def _do_senddtmf(self, cmd: SendDtmf) -> CommandResult:
        call = self._call(cmd.provider_call_id)
        if call.customer is None:
            raise AdapterError(f"call {call.pcid} has no customer leg yet")
        await self._rest(wire.dtmf(call.customer, cmd.digits))
        return CommandResult(provider_call_id=call.pcid)

    async def _do_monitor(self, cmd: Monitor) -> CommandResult:
        if cmd.mode not in ("listen", "whisper", "barge", "takeover", "stop"):
            raise AdapterError(f"unknown monitor mode {cmd.mode!r}")
        now = self.clock.now()
        if cmd.session_id is not None:
            mon = self._monitors.get(cmd.session_id)
            if mon is None:
                raise CallNotFound(f"no monitor session {cmd.session_id!r}")
            if cmd.mode == "stop":
                await self._teardown_monitor(mon, now)
                return CommandResult(provider_call_id=mon.pcid, session_id=mon.session_id)
            if cmd.mode != mon.mode:  # switch: new media path, same supervisor channel
                call = self._call(mon.pcid)
                now = self._now(call)
                if mon.started:
                    self._emit(call, EventKind.MONITOR_STOPPED, now, mon.session_id, mon.mode,
                               data={"mode": mon.mode, "session_id": mon.session_id})
                mon.started = False
                await self._undo_media(mon)
                if mon.mode in ("barge",) and call.bridge:
                    await self._quiet(wire.remove_channel(call.bridge, mon.supervisor))
                mon.mode = cmd.mode
                if mon.answered:
                    await self._setup_monitor(mon, now)
                    if not mon.started:
                        raise AdapterError(f"monitor session {mon.session_id}: switching to {cmd.mode} failed")
            return CommandResult(provider_call_id=mon.pcid, session_id=mon.session_id)
        if cmd.mode == "stop":
            raise AdapterError("monitor stop needs a session_id")
        call = self._call(cmd.provider_call_id)
        if call.agent_leg is None:
            raise AdapterError(f"call {call.pcid} is not connected to an agent; nothing to monitor")
        session = uuid.uuid4().hex[:12]
        sup = f"cti-s-{session}"
        mon = _Monitor(session_id=session, pcid=call.pcid, mode=cmd.mode, supervisor=sup,
                       endpoint=cmd.supervisor_endpoint)
        self._monitors[session] = mon
        call.monitors[session] = mon
        self._legs[sup] = (call.pcid, "supervisor")
        try:
            await self._rest(wire.originate(cmd.supervisor_endpoint, self.app, "supervisor", sup, timeout_s=30))
        except AdapterError:
            self._legs.pop(sup, None)
            await self._teardown_monitor(mon, now)
            raise
        return CommandResult(provider_call_id=call.pcid, session_id=session)


def _rest_error(req: wire.Request, status: int, body: bytes) -> AdapterError:
    """The error for a refused request, with Asterisk's reason (not its JSON). Only a missing
    channel is CallNotFound: callers take it for "the call is gone" (the router stops offering
    it, the API answers 409); a missing bridge, recording or playback is not that."""
    where = f"ARI {req.method} {req.path}"
    reason = wire.error_text(body)
    if status != 404:
        return AdapterError(f"{where} -> {status}: {reason}")
    what, ident = wire.addressed(req.path)
    missing = f"{what} {ident!r}" if ident else what
    message = f"{missing} not found ({where}: {reason})"
    return CallNotFound(message) if what == "channel" else AdapterError(message)


def _write(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body if isinstance(body, bytes) else json.dumps(body).encode())
