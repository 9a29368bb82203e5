"""SIP line adapter on pyVoIP 1.6.8: an agent's softphone inside the middleware.

The adapter registers one line (username@registrar) and acts as that agent's phone:
an INVITE to the line emits created (+ queued when the dialled number is a queue
number) + ringing(agent); `Answer` (from the agent panel) or `auto_answer` answers
-> answered(agent). It places outbound calls (`Originate`: the line calls the
customer), plays audio (`Play`, `VoicemailDrop`) and records the received RTP audio
to a WAV file (16-bit PCM, 8 kHz) under `storage_dir/<provider>/`, reported by a
`recording_ready` event (data.path) once the call has ended. Keys the caller presses
(RFC 2833 telephone-events) become `dtmf` events.

Options (`[[providers]]` keys): registrar, port (registrar port, 5060), username,
password, rtp_ports ([low, high]), agent (whose softphone this is), auto_answer,
auto_record, ring_timeout (s; unanswered inbound calls get 480 after it, 0 = ring until
the caller gives up), local_ip (default: the address that reaches the registrar), sip_port
(local SIP port, 5060), register_interval (s, 60), register_timeout (s, 5),
start_timeout (s, 10), stop_timeout (s, 5).

pyVoIP 1.6.8 problems and how this module works around them:
- `VoIPPhone.start()` REGISTERs and blocks (up to register_timeout per try) and needs a
  registrar: it runs in a thread under `start_timeout`, from a supervisor task with
  exponential backoff + jitter; `ready` stays false until the line is registered.
- It re-registers only on its own timer (`default_expires - 5`) and stops itself after
  3 failed REGISTERs: we set `default_expires = register_interval + 5` and a short
  `register_timeout`, so a lost registrar is seen within one interval; the supervisor
  then rebuilds the phone (ready false meanwhile) until the registrar answers again.
- `stop()` de-registers with a 30 s timeout and hangs when the registrar is gone: it
  runs in a thread under `stop_timeout` (stop the line before the registrar).
- It ignores 486/480/603 and other final failures to our INVITE (the call would stay
  DIALING forever), ignores CANCEL (the call would ring forever) and never sends 487;
  it cannot CANCEL its own INVITE. The adapter sees every datagram first
  (`sip.parse_message` is wrapped) and sends the ACK, the 487 and the CANCEL itself
  (built in `wire.py`).
- Its parser drops, before anyone sees them, messages RFC 3261 allows but it cannot
  read (compact or lower-case header names, folded lines, bare LF, a `tel:` From, a
  display name holding ": ", multipart bodies): our own receive step (`_recv`) reads
  every datagram first and hands pyVoIP a copy respelled its way (`wire.canonical`,
  `_tolerant_message_class`). Its 200 OK has been seen with `To: <sip:1001@:5060>` (host
  missing) and a BYE-reply To-tag that differs from the 200's: Kamailio and sipp accept
  both (some PBXs reject such BYEs); we read every datagram with our own tolerant parser
  (`wire.parse`), never pyVoIP's.
- It knows INVITE, ACK, BYE and CANCEL only and leaves any other request unanswered: a
  PBX's OPTIONS keepalive then marks the line unreachable and stops sending it calls.
  `_recv` answers OPTIONS 200 and other methods 405 (`wire.answer_other_request`).
- `read_audio` returns 8-bit *unsigned linear* audio (not mu-law) and `write_audio`
  takes the same: converted in `wire.u8_to_pcm16` / `wire.pcm16_to_u8`.
- It accepts an INVITE whose offer has no G.711 and then has no codec: we answer 488.
- UDP only, PCMU/PCMA/telephone-event only; no re-INVITE hold, REFER, conferencing:
  Connect, Hold, transfers and Monitor raise `Unsupported`.
- When it stops itself it closes the socket under its own receive thread, which dies
  with EBADF (a thread exception pytest reports as a warning): harmless, the
  supervisor has already dropped that phone.
- Its receive loop starts 1 s after `start()` (a `Timer(1, ...)`): `ready` waits for it.
- Its ACK to a 2xx goes to the To URI without the Record-Route set (a proxy drops it):
  we replace its 200 handler and send a routable ACK (`wire.ack_for_2xx`).
- Its digest authentication (RFC 3261 22, RFC 2617) fails against strict registrars and
  any proxy: its INVITE answers a 401 only (a 407, the usual challenge of proxies, PBXs and
  trunks, or a 486 first left it blocked holding its receive lock), re-sends in the same
  transaction (same branch and CSeq), and both INVITE and REGISTER use the digest uri
  `sip:server;transport=UDP` instead of the Request-URI and ignore qop. We replace
  `VoIPPhone.call` (`_call`: the receive loop reads the answers, `_invite_challenged` ACKs
  the 401/407 and re-sends as a new transaction) and SIPClient's private REGISTER steps
  (`_register`); the digest itself is computed in `wire` (MD5 or SHA-256, qop=auth with
  cnonce/nc when offered). A second challenge after our credentials (unless stale=true)
  is a refusal: Originate fails with "authentication refused", the line stays unregistered
  (`counters["auth_refused"]`, `sip_auth_refused` in the log).
- pyVoIP forgets a call whose callback thread has returned, so each inbound call's
  callback (started 1 s late) just lives until the call ends; the media loop runs in
  our own thread from the INVITE on.
- `VoIPCall.__del__` releases the call's RTP ports: it takes the phone's ports lock and
  calls `Thread.is_alive()` on its threads. As a finalizer it runs wherever the garbage
  collector happens to run. Once that was inside `Thread.start`, holding threading's
  `_shutdown_locks_lock`; `is_alive` needed the same lock, and every later thread start in
  the process hung (a py-spy dump of a hung CI run showed this; it was the SIP tests'
  occasional hang). `_disarm_call_finalizer` removes that finalizer. Nothing leaks: pyVoIP
  reclaims the ports of finished calls by itself when it runs short (`request_port` calls
  `release_ports()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import re
import socket
import threading
import time
import wave
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import structlog

from cti.adapters.base import (
    AdapterContext,
    AdapterError,
    Answer,
    CallNotFound,
    Capability,
    Command,
    CommandResult,
    Hangup,
    Monitor,
    Originate,
    Play,
    Record,
    Unsupported,
    VoicemailDrop,
    check_capability,
    register,
)
from cti.adapters.sip import wire
from cti.clock import SystemClock
from cti.model import CallEvent, Direction, EndCause, EventKind

log = structlog.get_logger(__name__)

_KEEP_ENDED = 500  # ended calls remembered (late BYE retransmissions, recording reports)


@dataclass(eq=False)
class _Recording:
    path: Path
    state: str = "recording"            # recording | paused | stopped
    frames: int = 0
    closed: threading.Event = field(default_factory=threading.Event)
    ops: int = 0


@dataclass(eq=False)
class _LineCall:
    sid: str
    direction: Direction
    call_id: str | None = None          # pre-allocated (click-to-call) or derived
    voip: Any = None                    # pyVoIP VoIPCall
    invite: wire.SipMessage | None = None
    answered: bool = False
    ended: bool = False
    voicemail: bool = False
    agent: str | None = None
    answered_at: float | None = None    # monotonic, for the media loop's pacing
    recording: _Recording | None = None
    plays: int = 0
    digits: int = 0
    done: threading.Event = field(default_factory=threading.Event)


_AUTH_TRIES = 3  # answers to challenges per request: the first, then new nonces marked stale=true


class _AuthRefused(AdapterError):
    """The registrar or a proxy challenged our credentials again: wrong username or password."""


@dataclass(eq=False)
class _PendingInvite:
    """One of our INVITEs until its final answer: what a challenge must be answered for."""

    request: str                        # the INVITE last sent (the retry after a challenge)
    uri: str                            # its Request-URI (the digest uri, the ACK's Request-URI)
    tries: int = 0                      # challenges answered
    refused: str | None = None          # why the credentials were refused
    settled: threading.Event = field(default_factory=threading.Event)  # an answer that is no challenge


def _disarm_call_finalizer() -> None:
    """Remove pyVoIP's `VoIPCall.__del__` (see the module docstring: it can deadlock thread
    starts when the garbage collector runs it inside threading's own lock)."""
    from pyVoIP.VoIP.VoIP import VoIPCall

    if "__del__" in VoIPCall.__dict__:
        del VoIPCall.__del__


def _daemon_call(fn: Callable[[], Any]) -> asyncio.Future[Any]:
    """Run a blocking call in its own daemon thread.

    Not the loop's default executor: pyVoIP's de-REGISTER can wait forever on a registrar
    that is gone, and the loop's shutdown waits for every executor thread (the process
    would hang on exit); a daemon thread given up on by a timeout is simply left behind.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not fut.done():
            fut.set_result(value) if ok else fut.set_exception(value)

    def run() -> None:
        try:
            outcome = (True, fn())
        except BaseException as exc:  # handed to the awaiting coroutine
            outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name="sip-stop", daemon=True).start()
    return fut

@register("sip")
class SipAdapter:
    type: ClassVar[str] = "sip"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({
        Capability.ANSWER, Capability.ORIGINATE, Capability.HANGUP, Capability.RECORD,
        Capability.RECORD_PAUSE, Capability.PLAY, Capability.VOICEMAIL_DROP,
    })

    def __init__(self, settings: Any, ctx: AdapterContext) -> None:
        opts = settings.options
        for key in ("registrar", "username"):
            if not opts.get(key):
                raise ValueError(f"providers.{settings.name}: sip needs {key!r}")
        self.name: str = settings.name
        self.tenant: str = ctx.tenant
        self._registrar = str(opts["registrar"])
        self._port = int(opts.get("port", 5060))
        self._username = str(opts["username"])
        self._password = str(opts.get("password") or "")
        low, high = (opts.get("rtp_ports") or [10000, 20000])[:2]
        if int(low) > int(high):
            raise ValueError(f"providers.{settings.name}: rtp_ports must be [low, high]")
        self._rtp = (int(low), int(high))
        self._sip_port = int(opts.get("sip_port", 5060))
        self._local_ip = str(opts.get("local_ip") or _local_ip_for(self._registrar, self._port))
        self._agent: str | None = opts.get("agent") or next(
            (ctx.agent_endpoints[ep] for ep in (self._username, f"sip:{self._username}",
                                                 f"sip:{self._username}@{self._registrar}")
             if ep in ctx.agent_endpoints), None)
        self._auto_answer = bool(opts.get("auto_answer", False))
        self._auto_record = bool(opts.get("auto_record", False))
        self._ring_timeout = float(opts.get("ring_timeout", 0))
        self._register_interval = max(1, int(opts.get("register_interval", 60)))
        self._register_timeout = float(opts.get("register_timeout", 5))
        self._start_timeout = float(opts.get("start_timeout", 10))
        self._stop_timeout = float(opts.get("stop_timeout", 5))
        self._storage = Path(ctx.storage_dir) / self.name
        self._clock = ctx.clock or SystemClock()
        self._lctx = wire.LineContext(provider=self.name, tenant=ctx.tenant, region=ctx.default_region,
                                      agent=self._agent, queue_numbers=dict(ctx.queue_numbers))
        self._queue: asyncio.Queue[CallEvent | None] = asyncio.Queue(maxsize=10_000)
        self._emitted: dict[str, None] = {}
        self._calls: dict[str, _LineCall] = {}
        self._orphans: dict[str, list[tuple[str, wire.SipMessage]]] = {}
        self._phone: Any = None
        self._invites: dict[str, _PendingInvite] = {}   # our INVITEs not finally answered, by Call-ID
        self._nonce_uses: dict[str, int] = {}           # nc per server nonce (RFC 2617 3.2.2)
        self._auth_error: str | None = None             # why the registrar refused our credentials
        self._registered = False
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.counters: Counter[str] = Counter()

    # ---- lifecycle ---------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        phone = self._phone
        if phone is None or not self._registered:
            return False
        from pyVoIP.VoIP.status import PhoneStatus

        return phone.get_status() in (PhoneStatus.REGISTERED, PhoneStatus.REGISTERING) and \
            phone.sip.registerFailures == 0

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._loop = asyncio.get_running_loop()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"sip-line-{self.name}")

    async def stop(self) -> None:
        self._running = False  # media loops end and close their WAV files
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        self._end_all(EndCause.NORMAL)  # pyVoIP hangs up what is answered; we report every call's end
        if self._tasks:  # let recording_ready reports finish
            await asyncio.wait(list(self._tasks), timeout=self._stop_timeout)
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self._stop_phone()
        for call in self._calls.values():
            call.done.set()
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    async def events(self) -> AsyncIterator[CallEvent]:
        while True:
            ev = await self._queue.get()
            if ev is None:
                return
            yield ev

    def _build_phone(self) -> Any:
        from pyVoIP.VoIP import VoIPPhone

        _disarm_call_finalizer()

        phone = VoIPPhone(self._registrar, self._port, self._username, self._password,
                          myIP=self._local_ip, callCallback=self._media_loop, sipPort=self._sip_port,
                          rtpPortLow=self._rtp[0], rtpPortHigh=self._rtp[1])
        phone.sip.default_expires = self._register_interval + 5
        phone.sip.register_timeout = self._register_timeout
        original = phone.sip.parse_message
        phone.sip.parse_message = lambda message: self._on_datagram(phone, original, message)
        phone.sip.recv = lambda: self._recv(phone)
        phone._callback_RESP_OK = lambda response: self._on_2xx(phone, response)
        # digest authentication done our way (see the module docstring); the two REGISTER
        # steps are name-mangled privates of SIPClient, called by its register()/deregister()
        phone.call = lambda number: self._call(phone, number)
        phone.sip._SIPClient__register = lambda: self._register(phone)
        phone.sip._SIPClient__deregister = lambda: self._register(phone, deregister=True)
        return phone

    async def _supervise(self) -> None:
        """Keep the line registered: (re)build the phone with backoff, ready false while down."""
        from pyVoIP.VoIP.status import PhoneStatus

        backoff, first = 0.5, True
        while self._running:
            phone = self._build_phone()
            self._phone, self._registered = phone, False
            try:
                await asyncio.wait_for(asyncio.to_thread(phone.start), self._start_timeout)
                deadline = time.monotonic() + self._start_timeout
                while phone.get_status() is not PhoneStatus.REGISTERED:
                    if time.monotonic() > deadline or phone.get_status() is PhoneStatus.FAILED:
                        raise TimeoutError("registrar did not accept the REGISTER")
                    await asyncio.sleep(0.05)
            except (TimeoutError, OSError, Exception) as exc:  # pyVoIP raises plain Exceptions too
                log.warning("sip_register_failed", provider=self.name, registrar=self._registrar,
                            error=self._auth_error or repr(exc), retry_in=round(backoff, 2))
                await self._stop_phone()
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 30.0)
                continue
            # pyVoIP starts its receive loop on a 1 s Timer after REGISTER: before that,
            # answers to our INVITEs would sit unread (the far end retransmits its 200)
            await asyncio.sleep(1.1)
            self._registered, self._auth_error = True, None
            backoff = 0.5
            if not first:
                self.counters["reconnects"] += 1
            first = False
            log.info("sip_line_registered", provider=self.name, line=self._username)
            await self._watch(phone)
            if not self._running:
                return
            log.warning("sip_line_down", provider=self.name, status=str(phone.get_status()))
            self._registered = False
            self._end_all(EndCause.FAILED)
            await self._stop_phone()

    async def _watch(self, phone: Any) -> None:
        """Poll pyVoIP's status (its threads change it) until the phone gives up.

        While pyVoIP retries REGISTER by itself `ready` is false; when it gets through
        again that counts as a reconnect. After its third failure it stops itself
        (status FAILED) and the supervisor builds a new phone.
        """
        from pyVoIP.VoIP.status import PhoneStatus

        was_ready = True
        while self._running and phone.get_status() in (PhoneStatus.REGISTERED, PhoneStatus.REGISTERING):
            now_ready = self.ready
            if now_ready != was_ready:
                if now_ready:
                    self.counters["reconnects"] += 1
                    log.info("sip_line_reregistered", provider=self.name)
                else:
                    log.warning("sip_line_unregistered", provider=self.name,
                                failures=phone.sip.registerFailures)
                was_ready = now_ready
            await asyncio.sleep(0.05)

    async def _stop_phone(self) -> None:
        phone, self._phone = self._phone, None
        self._registered = False
        if phone is None:
            return
        try:
            await asyncio.wait_for(_daemon_call(phone.stop), self._stop_timeout)
        except (TimeoutError, Exception) as exc:
            # pyVoIP's de-REGISTER waits for a registrar that may be gone: give up on it
            log.warning("sip_stop_timeout", provider=self.name, error=repr(exc))
            with contextlib.suppress(Exception):
                phone.sip.NSD = False
                phone.sip._close_sockets()

    # ---- pyVoIP threads -> the event loop ---------------------------------------------

    def _recv(self, phone: Any) -> None:
        """pyVoIP's receive step (its receive loop calls it, socket lock held), in front of
        pyVoIP's own parser, which drops whatever is not spelled its way (compact or
        lower-case header names, folded lines, a tel: From...): pyVoIP gets the message
        rewritten in its spelling (`wire.canonical`); requests it does not know (OPTIONS
        keepalives first) are answered here."""
        try:
            raw = phone.sip.s.recv(8192)
        except BlockingIOError:
            raise  # nothing to read: pyVoIP's loop waits and calls again
        except OSError as exc:  # pyVoIP's own recv swallows these too, while the phone runs
            if not phone.sip.NSD:
                raise
            log.warning("sip_recv_failed", provider=self.name, error=repr(exc))
            return
        self._handle_datagram(phone, raw)

    def _handle_datagram(self, phone: Any, raw: bytes) -> None:
        if not raw.strip(b"\x00\r\n \t"):
            return  # keepalives: pyVoIP's four NULs, RFC 5626's CRLFs
        try:
            msg = wire.parse(raw)
            reply = wire.answer_other_request(msg, phone.sip.gen_tag())
            message = None if reply else _tolerant_message_class()(wire.canonical(raw))
        except Exception as exc:  # pyVoIP's parser raises anything (IndexError, ValueError...)
            self.counters["malformed"] += 1
            log.warning("sip_malformed", provider=self.name, error=repr(exc))
            return
        try:
            if reply is not None:
                self.counters["answered_" + (msg.method or "").lower()] += 1
                phone.sip.out.sendto(reply.encode(), (phone.server, phone.port))
            else:
                phone.sip.parse_message(message)
        except BlockingIOError:
            raise
        except Exception as exc:  # a failure on one message must not end pyVoIP's receive loop
            log.warning("sip_datagram_failed", provider=self.name, error=repr(exc))

    def _on_datagram(self, phone: Any, original: Any, message: Any) -> None:
        """Runs in pyVoIP's receive thread for every SIP message, before pyVoIP handles it."""
        try:
            msg = wire.parse(message.raw)
            sid = msg.call_id
        except wire.SipParseError as exc:
            self.counters["malformed"] += 1
            log.warning("sip_malformed", provider=self.name, error=str(exc))
            return original(message)
        fact: str | None = None
        if msg.method == "INVITE" and sid not in phone.calls:
            if not wire.offers_g711(msg.body):
                self._refuse_codecs(phone, msg)
                return None
            fact = "invite"
        elif msg.method == "CANCEL":
            self._cancelled(phone, msg)
            fact = "cancel"
        elif msg.method == "BYE":
            fact = "bye"
        elif msg.status is not None:
            try:
                _, method = msg.cseq
            except wire.SipParseError:
                method = ""
            if method == "INVITE" and msg.status in (401, 407):
                self._invite_challenged(phone, msg)
                return None
            if method == "INVITE":
                self._invite_progressed(msg)
                if msg.status in (180, 183):
                    fact = "ringing"
                elif 200 <= msg.status < 300:
                    fact = "answered"
                elif msg.status >= 300:
                    fact = "rejected"
                    if msg.status not in (404, 503):  # pyVoIP handles (and ACKs) only these two
                        self._rejected(phone, msg)
                        self._post(fact, msg)
                        return None
        result = original(message)
        if fact:
            self._post(fact, msg)
        return result

    def _on_2xx(self, phone: Any, response: Any) -> None:
        """pyVoIP's 200 OK handling, with an ACK a proxy can route (pyVoIP's goes to the To URI)."""
        voip = phone.calls.get(response.headers["Call-ID"])
        if voip is None:
            return  # REGISTER, BYE, CANCEL answers
        voip.answered(response)
        try:
            ack = wire.ack_for_2xx(wire.parse(response.raw), _new_branch())
            phone.sip.out.sendto(ack.encode(), (phone.server, phone.port))
        except (wire.SipParseError, OSError) as exc:
            log.warning("sip_ack_failed", provider=self.name, error=repr(exc))

    def _refuse_codecs(self, phone: Any, invite: wire.SipMessage) -> None:
        self.counters["refused_codec"] += 1
        log.warning("sip_invite_without_g711", provider=self.name, call=invite.call_id)
        with contextlib.suppress(wire.SipParseError, OSError):
            reply = wire.not_acceptable(invite, phone.sip.gen_tag())
            phone.sip.out.sendto(reply.encode(), (phone.server, phone.port))

    def _cancelled(self, phone: Any, cancel: wire.SipMessage) -> None:
        from pyVoIP.VoIP import CallState

        voip = phone.calls.get(cancel.call_id)
        if voip is None or voip.state is not CallState.RINGING:
            # RFC 3261 9.2: a CANCEL that crosses our 200 (or any final answer) changes
            # nothing; pyVoIP 200s it and the caller ends an answered call with a BYE
            return
        phone.calls.pop(cancel.call_id, None)
        voip.state = CallState.ENDED
        try:
            invite = wire.parse(voip.request.raw)
            tag = phone.sip.tagLibrary.get(cancel.call_id) or phone.sip.gen_tag()
            phone.sip.out.sendto(wire.request_terminated(invite, tag).encode(), (phone.server, phone.port))
        except (wire.SipParseError, OSError) as exc:
            log.warning("sip_487_failed", provider=self.name, error=repr(exc))

    def _rejected(self, phone: Any, response: wire.SipMessage) -> None:
        voip = phone.calls.pop(response.call_id, None)
        if voip is not None:
            from pyVoIP.VoIP import CallState

            voip.state = CallState.ENDED
        # RFC 3261 17.1.1.3: the ACK's Request-URI is the INVITE's (pyVoIP dials sip:number@server)
        call = self._calls.get(response.call_id)
        uri = call.invite.uri if call is not None and call.invite is not None else None
        if uri is None and voip is not None:
            with contextlib.suppress(wire.SipParseError):
                uri = wire.parse(voip.request.raw).uri
        uri = uri or f"sip:{response.to_user or ''}@{phone.server}"
        with contextlib.suppress(OSError):
            phone.sip.out.sendto(wire.ack_for_failure(response, uri).encode(), (phone.server, phone.port))

    # ---- digest authentication (pyVoIP threads) -----------------------------------------

    def _call(self, phone: Any, number: str) -> Any:
        """pyVoIP's `VoIPPhone.call` (and its `SIPClient.invite`), without their socket reads.

        pyVoIP reads the answers to its INVITE itself, holding the receive lock, waits for a
        401 only (a 407 or a 486 first left it blocked, and every other message unread) and
        re-sends in the same transaction with wrong credentials; and it adds the call to
        `phone.calls` only after that, so a quick 200 found no call (no ACK). Here the call
        exists before the INVITE leaves, the receive loop reads the answers
        (`_invite_challenged` answers 401/407), and this returns on the first answer that is
        no challenge (pyVoIP returned on its 100).
        """
        from pyVoIP import RTP
        from pyVoIP.SIP import SIPMessage
        from pyVoIP.VoIP import CallState, VoIPCall

        sip = phone.sip
        medias = {phone.request_port(): {0: RTP.PayloadType.PCMU, 101: RTP.PayloadType.EVENT}}
        call_id, sess_id = sip.gen_call_id(), sip.sessID.next()
        text = sip.gen_invite(number, str(sess_id), medias, RTP.TransmitType.SENDRECV, _new_branch(), call_id)
        voip = VoIPCall(phone, CallState.DIALING, SIPMessage(text.encode()), sess_id, phone.myIP,
                        ms=medias, sendmode=phone.sendmode)
        pending = _PendingInvite(request=text, uri=str(wire.parse(text.encode()).uri))
        phone.calls[call_id], self._invites[call_id] = voip, pending
        while len(self._invites) > _KEEP_ENDED:  # INVITEs nobody ever answered
            self._invites.pop(next(iter(self._invites)))
        try:
            sip.out.sendto(text.encode(), (sip.server, sip.port))
            if pending.settled.wait(self._start_timeout) and not pending.refused:
                return voip
        except OSError:  # the socket is gone (the phone is stopping): forget the call
            self._invites.pop(call_id, None)
            phone.calls.pop(call_id, None)
            raise
        self._invites.pop(call_id, None)
        phone.calls.pop(call_id, None)
        voip.state = CallState.ENDED
        if pending.refused:
            raise _AuthRefused(pending.refused)
        raise TimeoutError(f"no answer to INVITE {call_id}")

    def _invite_progressed(self, response: wire.SipMessage) -> None:
        """An answer to one of our INVITEs that is no challenge: `_call` may return."""
        pending = self._invites.get(response.call_id)
        if pending is None or response.cseq[0] != wire.parse(pending.request.encode()).cseq[0]:
            return  # an answer to a request already re-sent with credentials
        pending.settled.set()
        if response.status is not None and response.status >= 200:
            self._invites.pop(response.call_id, None)

    def _invite_challenged(self, phone: Any, challenge_msg: wire.SipMessage) -> None:
        """401/407 to our INVITE (RFC 3261 8.1.3.5, 22.2-22.3): ACK it (it ends that
        transaction) and send the INVITE again as a new transaction (new branch, CSeq + 1)
        with our credentials; a second challenge for the same call, unless its nonce is
        only stale, means the credentials are wrong and the call fails."""
        sid = challenge_msg.call_id
        pending = self._invites.get(sid)
        if pending is None or challenge_msg.cseq[0] != wire.parse(pending.request.encode()).cseq[0]:
            if pending is None:  # not ours (any more): ACK it, forget the call
                self._rejected(phone, challenge_msg)
            else:  # a retransmission of a challenge already answered: ACK it again
                self._ack_challenge(phone, challenge_msg, pending)
            return
        challenge = wire.challenge_of(challenge_msg)
        refused = self._refusal(challenge_msg, challenge, pending.tries)
        if refused is not None:
            self._invites.pop(sid, None)
            self._rejected(phone, challenge_msg)  # ACKs it, forgets pyVoIP's call
            was_settled = pending.settled.is_set()
            pending.refused = refused
            pending.settled.set()
            if was_settled:  # `_call` has returned already: the call ends as rejected
                self._post("rejected", challenge_msg)
            return
        assert challenge is not None
        self._ack_challenge(phone, challenge_msg, pending)
        seq = challenge_msg.cseq[0] + 1
        pending.request = self._authorized(pending.request, challenge, "INVITE", pending.uri, seq)
        pending.tries += 1
        self._retried_invite(phone, sid, pending.request)
        phone.sip.out.sendto(pending.request.encode(), (phone.server, phone.port))

    def _ack_challenge(self, phone: Any, response: wire.SipMessage, pending: _PendingInvite) -> None:
        with contextlib.suppress(OSError):
            ack = wire.ack_for_failure(response, pending.uri)
            phone.sip.out.sendto(ack.encode(), (phone.server, phone.port))

    def _retried_invite(self, phone: Any, sid: str, request: str) -> None:
        """The call's INVITE is now the retry: a CANCEL must match it, the BYE's CSeq follow it."""
        from pyVoIP.SIP import SIPMessage

        voip = phone.calls.get(sid)
        if voip is not None:
            voip.request = SIPMessage(request.encode())
        call = self._calls.get(sid)
        if call is not None:
            call.invite = wire.parse(request.encode())

    def _refusal(self, response: wire.SipMessage, challenge: wire.Challenge | None, tries: int) -> str | None:
        """Why a challenge cannot be answered (None: answer it). After our credentials a new
        challenge means they were refused, unless it says the nonce was only stale
        (RFC 2617 3.2.1: retry with the new nonce, the password was right)."""
        code = response.status
        if challenge is None:
            return f"authentication refused: {code} without a Digest challenge we can answer (MD5, SHA-256)"
        if tries and not challenge.stale:
            return (f"authentication refused: {code} again after our credentials "
                    f"(wrong username or password for realm {challenge.realm!r})")
        if tries >= _AUTH_TRIES:
            return f"authentication refused: {code} after {tries} answers to stale nonces"
        return None

    def _authorized(self, request: str, challenge: wire.Challenge, method: str, uri: str, cseq: int) -> str:
        """`request` again with our answer to `challenge` (a fresh cnonce, the nonce's next nc)."""
        nc = self._nonce_uses.get(challenge.nonce, 0) + 1
        self._nonce_uses[challenge.nonce] = nc
        while len(self._nonce_uses) > 64:
            self._nonce_uses.pop(next(iter(self._nonce_uses)))
        value = wire.credentials(challenge, self._username, self._password, method, uri,
                                 cnonce=os.urandom(8).hex(), nc=nc)
        return wire.authorized_retry(request, challenge.answer_header, value,
                                     branch=_new_branch(), cseq=cseq)

    def _register(self, phone: Any, deregister: bool = False) -> bool:
        """pyVoIP's `SIPClient.__register` / `__deregister` (called by its register() and
        deregister(), receive lock held), with digest answers that strict registrars accept:
        401 or 407, the digest uri = the Request-URI, qop=auth when offered, a new branch and
        CSeq per try, stale nonces answered again. It raises (pyVoIP counts a failure and
        retries) on a refusal, which is logged once with its reason."""
        from pyVoIP.SIP import InvalidAccountInfoError, RetryRequiredError
        from pyVoIP.VoIP.status import PhoneStatus

        sip = phone.sip
        phone._status = PhoneStatus.DEREGISTERING if deregister else PhoneStatus.REGISTERING
        request = sip.gen_first_response(deregister=deregister)
        uri = str(wire.parse(request.encode()).uri)
        for tries in range(_AUTH_TRIES + 1):
            sip.out.sendto(request.encode(), (sip.server, sip.port))
            response = self._await_reply(phone, request)
            if response.status not in (401, 407):
                break
            refused = self._refusal(response, wire.challenge_of(response), tries)
            if refused is not None:
                self._auth_error = f"REGISTER {refused}"
                self.counters["auth_refused"] += 1
                log.warning("sip_auth_refused", provider=self.name, registrar=self._registrar,
                            line=self._username, reason=refused)
                raise InvalidAccountInfoError(self._auth_error)
            challenge = wire.challenge_of(response)
            assert challenge is not None
            request = self._authorized(request, challenge, "REGISTER", uri, sip.registerCounter.next())
        if response.status == 500:
            raise RetryRequiredError("registrar answered 500")  # pyVoIP waits 5 s and tries again
        if response.status is not None and 200 <= response.status < 300:
            return True
        raise InvalidAccountInfoError(f"registrar answered {response.status} to REGISTER")

    def _await_reply(self, phone: Any, request: str) -> wire.SipMessage:
        """The final response to `request` (same Call-ID and CSeq), within register_timeout.

        Whatever else arrives meanwhile (an INVITE, an answer to a call) goes the receive
        loop's way (pyVoIP took any datagram for the registrar's answer).
        """
        import select

        sent = wire.parse(request.encode())
        key = (sent.call_id, sent.cseq)
        deadline = time.monotonic() + phone.sip.register_timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([phone.sip.s], [], [], left)[0]:
                continue
            raw = phone.sip.s.recv(8192)
            with contextlib.suppress(wire.SipParseError):
                msg = wire.parse(raw)
                if msg.status is not None and (msg.call_id, msg.cseq) == key:
                    if msg.status >= 200:
                        return msg
                    continue  # 100 Trying: the final answer follows
            self._handle_datagram(phone, raw)
        raise TimeoutError(f"no answer to {sent.method} from {phone.server}:{phone.port}")

    def _post(self, fact: str, msg: wire.SipMessage) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._on_fact, fact, msg)

    def _post_dtmf(self, call: _LineCall, digits: str) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._on_dtmf, call, digits)

    def _on_dtmf(self, call: _LineCall, digits: str) -> None:
        now = self._clock.now()
        events = []
        for d in digits:
            call.digits += 1
            events.append(self._ev(call, EventKind.DTMF, now, call.digits, agent=call.agent, data={"digit": d}))
        self._publish(events)

    def _media_loop(self, voip: Any) -> None:
        """pyVoIP's per-call callback thread (started 1 s after the INVITE).

        The media itself runs in our own thread from the first moment (a recording
        started right after answering must not miss that second); this thread only has
        to live as long as the call, or pyVoIP forgets the call.
        """
        deadline = time.monotonic() + 5
        call = self._calls.get(voip.call_id)
        while call is None and time.monotonic() < deadline and self._running:
            time.sleep(0.01)  # the invite fact is applied on the event loop
            call = self._calls.get(voip.call_id)
        while call is not None and self._running and not call.done.wait(0.5):
            pass  # (pyVoIP's Timer threads are not daemons: never block one past stop())

    def _media(self, call: _LineCall, voip: Any) -> None:
        from pyVoIP.VoIP import CallState

        writer: wave.Wave_write | None = None
        read = 0
        try:
            while self._running and not call.ended and voip.state is not CallState.ENDED:
                rec = call.recording
                if voip.state is CallState.ANSWERED and call.answered_at is not None:
                    due = int((time.monotonic() - call.answered_at) * 8000) - read
                    if due >= 160:
                        data = voip.read_audio(due - due % 160, blocking=False)
                        read += len(data)
                        if rec is not None and rec.state == "recording":
                            if writer is None:
                                writer = _open_wav(rec.path)
                            writer.writeframes(wire.u8_to_pcm16(data))
                            rec.frames += len(data)
                digits = voip.get_dtmf(16)  # RFC 2833 events pyVoIP decoded from the RTP
                if digits:
                    self._post_dtmf(call, digits)
                if rec is not None and rec.state == "stopped" and writer is not None:
                    writer.close()
                    writer = None
                    rec.closed.set()
                time.sleep(0.02)
        except Exception as exc:  # never let one call's media kill the line
            log.warning("sip_media_error", provider=self.name, call=call.sid, error=repr(exc))
        finally:
            if writer is not None:
                writer.close()
            if call.recording is not None:
                call.recording.closed.set()

    # ---- facts -> events (event loop) -------------------------------------------------

    def _publish(self, events: list[CallEvent]) -> None:
        for ev in events:
            if ev.event_id in self._emitted:
                continue
            self._emitted[ev.event_id] = None
            if len(self._emitted) > 50_000:
                self._emitted.pop(next(iter(self._emitted)))
            self._queue.put_nowait(ev)

    def _on_fact(self, fact: str, msg: wire.SipMessage) -> None:
        try:
            self._apply_fact(fact, msg)
        except Exception as exc:  # one bad message must not stop the line
            self.counters["fact_errors"] += 1
            log.warning("sip_fact_failed", provider=self.name, fact=fact, error=repr(exc))

    def _apply_fact(self, fact: str, msg: wire.SipMessage) -> None:
        sid = msg.call_id
        now = self._clock.now()
        call = self._calls.get(sid)
        if fact == "invite":
            if call is not None:
                return
            call = self._calls[sid] = _LineCall(sid=sid, direction=Direction.INBOUND, invite=msg,
                                                agent=self._agent)
            phone = self._phone
            call.voip = phone.calls.get(sid) if phone is not None else None
            if call.voip is not None:
                threading.Thread(target=self._media, args=(call, call.voip), name=f"sip-media-{sid}",
                                 daemon=True).start()
            self._publish(wire.inbound_events(msg, self._lctx, now))
            log.info("sip_inbound_call", provider=self.name, call=sid, caller=wire.caller_user(msg))
            if self._auto_answer:
                self._spawn(self.execute(Answer(sid, self._agent or "")))
            elif self._ring_timeout > 0:
                self._spawn(self._ring_timer(call))
            return
        if call is None:
            self._orphans.setdefault(sid, []).append((fact, msg))  # an originate not yet registered
            return
        if fact == "ringing" and call.direction is Direction.OUTBOUND:
            self._publish([self._ev(call, EventKind.RINGING, now, call.agent, agent=call.agent)])
        elif fact == "answered" and call.direction is Direction.OUTBOUND and not call.answered:
            self._answered(call, now)
        elif fact == "rejected" and msg.status is not None:
            self._end(call, now, wire.end_cause(msg.status), sip_status=msg.status)
        elif fact == "cancel":
            if not call.ended and not call.answered:
                self._publish(wire.cancel_events(sid, self._lctx, now, ringing=True)[:-1])
                self._end(call, now, EndCause.CALLER_HANGUP)
        elif fact == "bye":
            self._end(call, now, EndCause.VOICEMAIL if call.voicemail else EndCause.NORMAL)

    def _ev(self, call: _LineCall, kind: EventKind, at: Any, *parts: object, **kw: Any) -> CallEvent:
        return wire.event(self._lctx, call.sid, kind, at, *parts, call_id=call.call_id, **kw)

    def _answered(self, call: _LineCall, at: Any) -> None:
        call.answered = True
        call.answered_at = time.monotonic()
        self._publish([self._ev(call, EventKind.ANSWERED, at, agent=call.agent)])
        if self._auto_record and call.recording is None:
            self._spawn(self.execute(Record(call.sid, "start")))

    def _end(self, call: _LineCall, at: Any, cause: str, **data: Any) -> None:
        if call.ended:
            return
        call.ended = True
        self._publish([wire.ended(self._lctx, call.sid, at, cause, call_id=call.call_id, **data)])
        log.info("sip_call_ended", provider=self.name, call=call.sid, cause=str(cause))
        call.done.set()
        if call.recording is not None:
            self._spawn(self._recording_ready(call))
        self._prune()

    def _prune(self) -> None:
        """Forget the oldest ended calls (and stray early answers) so a long-running line stays small."""
        ended = [sid for sid, c in self._calls.items() if c.ended]
        for sid in ended[: max(0, len(ended) - _KEEP_ENDED)]:
            del self._calls[sid]
        while len(self._orphans) > _KEEP_ENDED:
            self._orphans.pop(next(iter(self._orphans)))

    def _end_all(self, cause: str) -> None:
        now = self._clock.now()
        for call in list(self._calls.values()):
            self._end(call, now, cause)

    async def _ring_timer(self, call: _LineCall) -> None:
        """Nobody answered in `ring_timeout` seconds: 480 to the caller, the agent missed it."""
        await asyncio.sleep(self._ring_timeout)
        phone = self._phone
        if call.answered or call.ended or phone is None or call.invite is None:
            return
        from pyVoIP.VoIP import CallState

        voip = phone.calls.pop(call.sid, None)
        if voip is not None:
            voip.state = CallState.ENDED
        tag = phone.sip.tagLibrary.get(call.sid) or phone.sip.gen_tag()
        reply = wire.response_to(call.invite, 480, "Temporarily Unavailable", tag)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(phone.sip.out.sendto, reply.encode(), (phone.server, phone.port))
        now = self._clock.now()
        self._publish([self._ev(call, EventKind.NO_ANSWER, now, call.agent, agent=call.agent,
                                data={"reason": "timeout"})])
        self._end(call, now, EndCause.NO_ANSWER)

    async def _recording_ready(self, call: _LineCall) -> None:
        rec = call.recording
        assert rec is not None
        if rec.state != "stopped":
            rec.state = "stopped"
            self._publish([self._ev(call, EventKind.RECORDING_STOPPED, self._clock.now(), str(rec.path))])
        await asyncio.to_thread(rec.closed.wait, 3)
        if not rec.path.exists():
            _open_wav(rec.path).close()  # nothing was heard: an empty, valid WAV
        self._publish([self._ev(call, EventKind.RECORDING_READY, self._clock.now(), str(rec.path),
                                data={"path": str(rec.path), "duration_s": round(rec.frames / 8000, 3),
                                      "format": "wav", "sample_rate": 8000})])

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("sip_task_failed", provider=self.name, error=repr(task.exception()))

    # ---- commands ----------------------------------------------------------------------

    async def execute(self, command: Command) -> CommandResult:
        if isinstance(command, Monitor):
            raise Unsupported(self.type, "monitor",
                              "a pyVoIP line is one endpoint; it cannot mix a supervisor into its call")
        check_capability(self.type, self.capabilities, command)
        if isinstance(command, Originate):
            return await self._originate(command)
        call = self._calls.get(getattr(command, "provider_call_id", ""))
        if call is None or call.ended:
            raise CallNotFound(f"sip line {self.name} has no call {getattr(command, 'provider_call_id', '')!r}")
        if isinstance(command, Answer):
            return await self._answer(call, command)
        if isinstance(command, Hangup):
            return await self._hangup(call)
        if isinstance(command, Record):
            return self._record(call, command)
        if isinstance(command, Play | VoicemailDrop):
            return await self._play(call, command)
        raise Unsupported(self.type, command.name)

    def _voip(self, call: _LineCall) -> Any:
        if call.voip is None and self._phone is not None:
            call.voip = self._phone.calls.get(call.sid)
        if call.voip is None:
            raise CallNotFound(f"pyVoIP does not know call {call.sid!r}")
        return call.voip

    async def _answer(self, call: _LineCall, cmd: Answer) -> CommandResult:
        from pyVoIP.VoIP import InvalidStateError

        if call.direction is not Direction.INBOUND or call.answered:
            raise AdapterError(f"call {call.sid} is not ringing on this line")
        voip = self._voip(call)
        try:
            await asyncio.to_thread(voip.answer)
        except InvalidStateError as exc:
            raise AdapterError(f"cannot answer call {call.sid}: {exc}") from exc
        call.agent = cmd.agent or call.agent
        self._answered(call, self._clock.now())
        return CommandResult(provider_call_id=call.sid)

    async def _hangup(self, call: _LineCall) -> CommandResult:
        from pyVoIP.VoIP import CallState

        voip = self._voip(call)
        now = self._clock.now()
        if voip.state is CallState.ANSWERED:
            await asyncio.to_thread(voip.hangup)
            self._end(call, now, EndCause.VOICEMAIL if call.voicemail else EndCause.NORMAL)
        elif voip.state is CallState.RINGING:  # the agent declines
            await asyncio.to_thread(voip.deny)
            self._publish([self._ev(call, EventKind.NO_ANSWER, now, call.agent, agent=call.agent,
                                    data={"reason": "declined"})])
            self._end(call, now, EndCause.NO_ANSWER)
        elif voip.state is CallState.DIALING and call.invite is not None:
            phone = self._phone
            await asyncio.to_thread(phone.sip.out.sendto, wire.cancel_for(call.invite).encode(),
                                    (phone.server, phone.port))  # the 487 ends it
        return CommandResult(provider_call_id=call.sid)

    async def _originate(self, cmd: Originate) -> CommandResult:
        phone = self._phone
        if phone is None or not self.ready:
            raise AdapterError(f"sip line {self.name} is not registered")
        number = wire.to_e164(cmd.to_number, self._lctx.region) or cmd.to_number
        if not re.fullmatch(r"\+?[0-9A-Za-z*#._-]+", number):
            raise AdapterError(f"cannot dial {cmd.to_number!r} from a SIP line")
        try:
            voip = await asyncio.wait_for(asyncio.to_thread(phone.call, number), self._start_timeout)
        except TimeoutError as exc:
            raise AdapterError(f"no answer from registrar {self._registrar} to our INVITE") from exc
        except _AuthRefused as exc:
            raise AdapterError(f"sip line {self.name} cannot call {number}: {exc}") from exc
        sid = voip.call_id
        agent = cmd.agent or self._agent
        call = _LineCall(sid=sid, direction=Direction.OUTBOUND, call_id=cmd.call_id, voip=voip,
                         invite=wire.parse(voip.request.raw), agent=agent)
        self._calls[sid] = call
        now = self._clock.now()
        self._publish([
            self._ev(call, EventKind.CREATED, now, direction=Direction.OUTBOUND, agent=agent,
                     from_number=self._username, to_number=number),
            self._ev(call, EventKind.RINGING, now, agent, agent=agent),
        ])
        threading.Thread(target=self._media, args=(call, voip), name=f"sip-media-{sid}", daemon=True).start()
        for fact, msg in self._orphans.pop(sid, []):
            self._apply_fact(fact, msg)
        return CommandResult(provider_call_id=sid)

    def _record(self, call: _LineCall, cmd: Record) -> CommandResult:
        now = self._clock.now()
        rec = call.recording
        if cmd.action == "start":
            if rec is not None and rec.state != "stopped":
                return CommandResult(provider_call_id=call.sid, detail={"path": str(rec.path)})
            self._storage.mkdir(parents=True, exist_ok=True)
            path = self._storage / (_safe(call.sid) + ".wav")
            call.recording = rec = _Recording(path=path)
            self._publish([self._ev(call, EventKind.RECORDING_STARTED, now, str(path),
                                    data={"recording": str(path)})])
        elif rec is None:
            raise AdapterError(f"call {call.sid} is not being recorded")
        elif cmd.action in ("pause", "resume"):
            rec.ops += 1
            rec.state = "paused" if cmd.action == "pause" else "recording"
            kind = EventKind.RECORDING_PAUSED if cmd.action == "pause" else EventKind.RECORDING_RESUMED
            self._publish([self._ev(call, kind, now, str(rec.path), rec.ops)])
        elif cmd.action == "stop":
            if rec.state != "stopped":
                rec.state = "stopped"
                self._publish([self._ev(call, EventKind.RECORDING_STOPPED, now, str(rec.path))])
        else:
            raise AdapterError(f"unknown record action {cmd.action!r} (start|stop|pause|resume)")
        return CommandResult(provider_call_id=call.sid, detail={"path": str(rec.path)})

    async def _play(self, call: _LineCall, cmd: Play | VoicemailDrop) -> CommandResult:
        if not call.answered:
            raise AdapterError(f"call {call.sid} is not answered: nothing to play into")
        voip = self._voip(call)
        try:
            audio = await asyncio.to_thread(_load_audio, cmd.media)
        except (OSError, RuntimeError, ValueError) as exc:
            raise AdapterError(f"cannot play {cmd.media!r}: {exc}") from exc
        voip.write_audio(audio)
        call.plays += 1
        n = call.plays
        if isinstance(cmd, VoicemailDrop):
            call.voicemail = True
        self._spawn(self._after_play(call, len(audio) / 8000, n, isinstance(cmd, VoicemailDrop)))
        return CommandResult(provider_call_id=call.sid, detail={"duration_s": len(audio) / 8000})

    async def _after_play(self, call: _LineCall, seconds: float, n: int, hangup: bool) -> None:
        await asyncio.sleep(seconds)
        if call.ended:
            return
        self._publish([self._ev(call, EventKind.PLAYBACK_FINISHED, self._clock.now(), n)])
        if hangup:
            await self._hangup(call)


@functools.cache
def _tolerant_message_class() -> type:
    """pyVoIP's SIPMessage, reading what `wire.canonical` cannot respell for it.

    Its header split cuts a value at its first ": " (`"Sales: Paris" <sip:...>` loses its
    URI) and its From/To parser finds the URI by "sip:" only (a trunk's `<tel:+33...>` or a
    `sips:` URI raises). pyVoIP echoes From/To `raw` and `tag` into its responses, so those
    keep the caller's exact text.
    """
    from pyVoIP.SIP import SIPMessage

    class TolerantMessage(SIPMessage):  # type: ignore[misc]
        @staticmethod
        def parse_raw_header(headers_raw: list[bytes], handle: Callable[[str, str], None]) -> None:
            headers: dict[str, Any] = {"Via": []}
            for line in headers_raw:
                name, _, value = str(line, "utf8").partition(": ")
                if name == "Via":
                    headers["Via"].append(value)
                headers.setdefault(name, value)
            for name, value in headers.items():
                handle(name, value)

        def parse_header(self, header: str, data: Any) -> None:
            if header in ("From", "To") and not re.search(r"<?sip:", data.split(";tag=")[0]):
                raw, _, tag = data.partition(";tag=")
                user = wire.uri_user(raw) or ""
                self.headers[header] = {"raw": raw, "tag": tag, "address": user, "number": user or None,
                                        "caller": raw.split("<")[0].strip().strip('"'), "host": ""}
                return
            super().parse_header(header, data)

    return TolerantMessage


def _open_wav(path: Path) -> wave.Wave_write:
    w = wave.open(str(path), "wb")
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(8000)
    return w


def _load_audio(media: str) -> bytes:
    """A sound file (any format libsndfile reads, mu-law WAV included) as pyVoIP audio."""
    import soundfile as sf

    path = media.removeprefix("file://")
    samples, rate = sf.read(path, dtype="int16", always_2d=True)
    mono = samples.mean(axis=1).astype("int16")
    return wire.pcm16_to_u8(wire.resample(mono, int(rate)))


def _safe(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", value)[:120]


def _new_branch() -> str:
    """A Via branch for a new client transaction (RFC 3261 8.1.1.7: the magic cookie first)."""
    return "z9hG4bK" + os.urandom(8).hex()


def _local_ip_for(host: str, port: int) -> str:
    """The local address that routes to the registrar (what pyVoIP must put in Contact/SDP)."""
    if host in ("127.0.0.1", "localhost"):
        return "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, port))
            return str(s.getsockname()[0])
    except OSError:
        return os.environ.get("CTI_SIP_LOCAL_IP", "0.0.0.0")
