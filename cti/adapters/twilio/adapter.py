"""Twilio Programmable Voice adapter: webhooks in, REST API out.

Inbound calls hit the voice webhook, which answers TwiML `<Enqueue>` into a Twilio
queue named after our queue. When our router sends `Connect`, the call is redirected
(REST `Calls/{sid}.json` with TwiML) into a conference named after its CallSid and
each target agent is added as a conference participant; the conference is what
lets a supervisor join later (`Coaching` + `CallSidToCoach` = whisper, `Muted` =
listen, neither = barge), hold the customer (participant `Hold`) and play to them
(participant `AnnounceUrl`). Click-to-call creates a call to the agent's endpoint
whose TwiML dials the customer; such a plain `<Dial>` cannot be held or played into.
Twilio does not order callbacks across calls, so the customer's end waits (up to
`legs_wait_s`) for its agent legs to report before the end cause is decided.

Every webhook must carry a valid `X-Twilio-Signature` over `public_url` + path +
query (else 403, nothing published); retried deliveries are dropped by
`I-Twilio-Idempotency-Token` or CallSid+SequenceNumber (a retried voice webhook still
gets its `<Enqueue>`: Twilio retries when our first answer did not reach it); malformed
bodies get a 400 naming the problem and are counted in `counters`.

Twilio keeps no connection, so `ready` is true between start() and stop(); after a
gap (restart) `resync()` lists in-progress calls and closes those that ended meanwhile.

Options (`[[providers]]` keys): account_sid, auth_token, api_url
(default https://api.twilio.com), caller_id (From of agent/supervisor legs),
hold_music (URL), wait_url (Enqueue waitUrl), default_queue, max_retries (REST retries
on 429 / unsent requests, and on 5xx / lost answers for requests safe to repeat; with
backoff + jitter), rest_timeout (s, per request), legs_wait_s (s, 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlencode

import aiohttp
import structlog
from aiohttp import web
from twilio.request_validator import RequestValidator

from cti.adapters.base import (
    AdapterContext,
    AdapterError,
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
    Unhold,
    Unsupported,
    VoicemailDrop,
    check_capability,
    register,
)
from cti.adapters.twilio import wire
from cti.clock import SystemClock
from cti.model import CallEvent, EventKind, make_call_id, make_event_id

log = structlog.get_logger(__name__)

API_VERSION = "2010-04-01"
_SEEN_MAX = 50_000
_CALLS_MAX = 20_000


@dataclass(slots=True)
class _CallInfo:
    """What the adapter remembers of a live call (lost on restart; see resync)."""

    number: str | None = None          # the number the customer dialled (From of our legs)
    call_id: str | None = None
    outbound: bool = False              # a click-to-call: this call is the agent's leg
    answered: bool = False
    transferred: bool = False
    voicemail: bool = False
    agent_legs: dict[str, str] = field(default_factory=dict)  # leg sid -> agent
    answered_leg: str | None = None
    recording: str | None = None
    record_ops: int = 0
    conference: str | None = None      # ConferenceSid (participant updates need the sid)
    final_legs: set[str] = field(default_factory=set)  # agent legs whose final status arrived
    last_at: datetime | None = None     # latest fact published for the call
    conf_seq: dict[int, datetime] = field(default_factory=dict)  # conference SequenceNumber -> when

    def legs_pending(self) -> bool:
        return any(leg not in self.final_legs for leg in self.agent_legs)
    ended: bool = False


@register("twilio")
class TwilioAdapter:
    type: ClassVar[str] = "twilio"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({
        Capability.CONNECT, Capability.ORIGINATE, Capability.HANGUP, Capability.HOLD,
        Capability.BLIND_TRANSFER, Capability.RECORD, Capability.RECORD_PAUSE,
        Capability.VOICEMAIL_DROP, Capability.PLAY, Capability.MONITOR_LISTEN, Capability.MONITOR_WHISPER,
        Capability.MONITOR_BARGE,
    })

    def __init__(self, settings: Any, ctx: AdapterContext) -> None:
        opts = settings.options
        for key in ("account_sid", "auth_token"):
            if not opts.get(key):
                raise ValueError(f"providers.{settings.name}: twilio needs {key!r}")
        self.name: str = settings.name
        self.tenant: str = ctx.tenant
        self._account = str(opts["account_sid"])
        self._token = str(opts["auth_token"])
        self._api = str(opts.get("api_url") or "https://api.twilio.com").rstrip("/")
        self._caller_id: str | None = opts.get("caller_id")
        self._hold_music: str | None = opts.get("hold_music")
        self._wait_url: str | None = opts.get("wait_url")
        self._default_queue = str(opts.get("default_queue") or "default")
        self._max_retries = int(opts.get("max_retries", 3))
        self._rest_timeout = float(opts.get("rest_timeout", 10))
        self._legs_wait_s = float(opts.get("legs_wait_s", 3.0))
        self._public = ctx.public_url.rstrip("/")
        self._base = f"/webhooks/twilio/{self.name}"
        self._clock = ctx.clock or SystemClock()
        self._wctx = wire.WireContext(provider=self.name, tenant=ctx.tenant, region=ctx.default_region,
                                      queue_numbers=dict(ctx.queue_numbers),
                                      agent_endpoints=dict(ctx.agent_endpoints))
        self._validator = RequestValidator(self._token)
        self._queue: asyncio.Queue[CallEvent | None] = asyncio.Queue(maxsize=10_000)
        self._seen: OrderedDict[str, None] = OrderedDict()       # webhook dedupe keys
        self._emitted: OrderedDict[str, None] = OrderedDict()    # event ids already published
        self._calls: OrderedDict[str, _CallInfo] = OrderedDict()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running = False
        self.synced = asyncio.Event()  # set once the start-up resync has run (or failed)
        self.counters: Counter[str] = Counter()

    # ---- lifecycle ---------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._running

    async def start(self) -> None:
        if self._running:
            return
        self._session = aiohttp.ClientSession(
            auth=aiohttp.BasicAuth(self._account, self._token),
            timeout=aiohttp.ClientTimeout(total=self._rest_timeout),
        )
        self._running = True
        self._spawn(self._resync_quietly())

    async def stop(self) -> None:
        self._running = False
        if self._tasks:  # deferred call ends and leg cancels finish (bounded by legs_wait_s)
            await asyncio.wait(list(self._tasks), timeout=self._legs_wait_s + 0.5)
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._session is not None:
            await self._session.close()
            self._session = None
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def events(self) -> AsyncIterator[CallEvent]:
        while True:
            ev = await self._queue.get()
            if ev is None:
                return
            yield ev

    # ---- webhooks ----------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        """The webhook routes, for the app's aiohttp server (or a standalone test app)."""
        return [
            web.post(f"{self._base}/voice", self._on_voice),
            web.post(f"{self._base}/status", self._on_status),
            web.post(f"{self._base}/recording", self._on_recording),
            web.post(f"{self._base}/conference", self._on_conference),
        ]

    def web_app(self) -> web.Application:
        app = web.Application()
        app.add_routes(self.routes())
        return app

    def url(self, kind: str, **query: str | None) -> str:
        q = {k: v for k, v in query.items() if v}
        return f"{self._public}{self._base}/{kind}" + (f"?{urlencode(q)}" if q else "")

    async def _read(self, request: web.Request, reply: Any = None
                    ) -> tuple[dict[str, str], list[str]] | web.Response:
        """Signature check and form parsing; a Response means: reply this and stop.

        `reply(params)` answers a retried delivery: Twilio retries when it did not get our
        first answer (timeout), so a webhook whose answer is TwiML must get it again.
        """
        signature = request.headers.get("X-Twilio-Signature")
        if not signature:
            self.counters["bad_signature"] += 1
            log.warning("twilio_webhook_unsigned", provider=self.name, path=request.path)
            return web.Response(status=403, text="missing X-Twilio-Signature")
        body = await request.read()
        try:
            params = wire.parse_form(body)
        except wire.WireError as exc:
            return self._malformed(request, exc)
        url = self._public + request.path_qs
        if not self._validator.validate(url, params, signature):
            self.counters["bad_signature"] += 1
            log.warning("twilio_webhook_bad_signature", provider=self.name, path=request.path)
            return web.Response(status=403, text="invalid X-Twilio-Signature")
        key = wire.dedupe_keys(params, request.headers, request.path)
        if any(k in self._seen for k in key):
            self.counters["duplicate"] += 1
            if reply is not None:
                return reply(params)
            return web.Response(status=200, text=wire.twiml(), content_type="text/xml")
        return params, key

    def _malformed(self, request: web.Request, exc: Exception) -> web.Response:
        self.counters["malformed"] += 1
        log.warning("twilio_webhook_malformed", provider=self.name, path=request.path, error=str(exc))
        return web.Response(status=400, text=f"malformed Twilio callback: {exc}")

    def _remember(self, keys: list[str]) -> None:
        for key in keys:
            self._seen[key] = None
        while len(self._seen) > _SEEN_MAX:
            self._seen.popitem(last=False)

    async def _publish(self, events: list[CallEvent]) -> None:
        for ev in events:
            if ev.event_id in self._emitted:
                continue
            self._emitted[ev.event_id] = None
            while len(self._emitted) > _SEEN_MAX:
                self._emitted.popitem(last=False)
            self._note(ev)
            await self._queue.put(ev)
            log.debug("twilio_event", provider=self.name, call_id=ev.call_id, kind=str(ev.kind))

    def _info(self, sid: str) -> _CallInfo:
        info = self._calls.get(sid)
        if info is None:
            info = self._calls[sid] = _CallInfo()
            while len(self._calls) > _CALLS_MAX:
                self._calls.popitem(last=False)
        return info

    def _note(self, ev: CallEvent) -> None:
        """Keep what end causes and ring-all need to know."""
        info = self._info(ev.provider_call_id)
        if ev.call_id != make_call_id(self.tenant, self.name, ev.provider_call_id):
            info.call_id = ev.call_id
        if ev.kind is EventKind.ANSWERED:
            info.answered = True
            leg = ev.data.get("leg")
            if leg and info.agent_legs and info.answered_leg is None:
                info.answered_leg = leg
                for other in info.agent_legs:
                    if other != leg:  # ring-all: the others stop ringing
                        self._spawn(self._quiet_hangup(other, "canceled"))
        elif ev.kind is EventKind.ENDED:
            info.ended = True
        if info.last_at is None or ev.occurred_at > info.last_at:
            info.last_at = ev.occurred_at

    async def _parsed(self, request: web.Request, parse: Any, *, reply: Any = None, **flags: Any
                      ) -> tuple[dict[str, str], str, list[CallEvent]] | web.Response:
        """The callback read, checked and parsed: (params, dedupe key, events), or the reply
        that refuses it (bad signature, malformed) or answers a retry (`reply`, see _read)."""
        got = await self._read(request, reply)
        if isinstance(got, web.Response):
            return got
        params, key = got
        try:
            events = parse(params, dict(request.query), self._wctx, self._clock.now(), **flags)
        except wire.WireError as exc:
            return self._malformed(request, exc)
        return params, key, events

    async def _handle(self, request: web.Request, parse: Any, **flags: Any) -> web.Response:
        got = await self._parsed(request, parse, **flags)
        if isinstance(got, web.Response):
            return got
        _params, key, events = got
        await self._publish(events)
        self._remember(key)
        return web.Response(status=200, text=wire.twiml(), content_type="text/xml")

    async def _on_voice(self, request: web.Request) -> web.Response:
        got = await self._parsed(request, wire.inbound_events, reply=self._enqueue_reply)
        if isinstance(got, web.Response):
            return got
        params, key, events = got
        info = self._info(params["CallSid"])
        info.number = params.get("To")
        await self._publish(events)
        self._remember(key)
        return self._enqueue_reply(params)

    def _enqueue_reply(self, params: Mapping[str, str]) -> web.Response:
        """The voice webhook's TwiML; a retried delivery gets it again (an empty answer
        would hang up on the caller)."""
        queue = wire.queue_of_voice(params, self._wctx) or self._default_queue
        return web.Response(text=wire.enqueue_twiml(queue, self._wait_url), content_type="text/xml")

    async def _on_status(self, request: web.Request) -> web.Response:
        got = await self._read(request)
        if isinstance(got, web.Response):
            return got
        params, key = got
        query = dict(request.query)
        parent = query.get("parent") or params.get("ParentCallSid") or params.get("CallSid", "")
        info = self._calls.get(parent) or _CallInfo()
        received = self._clock.now()
        try:
            events = wire.status_events(params, query, self._wctx, received, answered=info.answered,
                                        transferred=info.transferred, voicemail=info.voicemail)
        except wire.WireError as exc:
            return self._malformed(request, exc)
        status = params["CallStatus"]
        if query.get("role") == "originate" and status not in wire.TERMINAL:
            # a click-to-call's own callbacks: known again after a restart, so a recording
            # started later still names the agent as its first channel
            self._info(params.get("CallSid", parent)).outbound = True
        if query.get("role") == "agent" and status in wire.TERMINAL:
            info.final_legs.add(params["CallSid"])
        if not query.get("role") and status in wire.TERMINAL and not info.answered and info.legs_pending():
            # Twilio does not order callbacks across calls: the customer's end may arrive
            # before the agent leg's "answered". Decide the end cause once the legs report;
            # legs still ringing for a caller who left are cancelled (they report no_answer).
            # (Status=canceled only stops a queued/ringing call; an answered leg is unaffected.)
            for leg in info.agent_legs:
                if leg not in info.final_legs:
                    self._spawn(self._quiet_hangup(leg, "canceled"))
            self._spawn(self._end_after_legs(parent, params, query, received))
        else:
            await self._publish(events)
        self._remember(key)
        return web.Response(status=200, text=wire.twiml(), content_type="text/xml")

    async def _end_after_legs(self, sid: str, params: dict[str, str], query: dict[str, str],
                              received: Any) -> None:
        info = self._info(sid)
        for _ in range(int(self._legs_wait_s / 0.05)):
            if not info.legs_pending() or info.answered:
                break
            await asyncio.sleep(0.05)
        events = wire.status_events(params, query, self._wctx, received, answered=info.answered,
                                    transferred=info.transferred, voicemail=info.voicemail)
        if info.last_at is not None:  # the call cannot end before its legs' facts
            events = [replace(e, occurred_at=max(e.occurred_at, info.last_at)) for e in events]
        await self._publish(events)

    async def _on_recording(self, request: web.Request) -> web.Response:
        return await self._handle(request, wire.recording_events)

    async def _on_conference(self, request: web.Request) -> web.Response:
        got = await self._parsed(request, wire.conference_events)
        if isinstance(got, web.Response):
            return got
        params, key, events = got
        parent = request.query.get("parent") or params.get("FriendlyName")
        if parent and params.get("ConferenceSid"):
            # participant updates address the conference by its sid
            self._info(parent).conference = params["ConferenceSid"]
        if parent and params.get("SequenceNumber"):
            events = self._in_sequence(parent, wire.seq_of(params), events)
        await self._publish(events)
        self._remember(key)
        return web.Response(status=200, text=wire.twiml(), content_type="text/xml")

    def _in_sequence(self, sid: str, seq: int, events: list[CallEvent]) -> list[CallEvent]:
        """Keep a conference's facts in SequenceNumber order.

        Twilio does not deliver callbacks in order, and wire.occurred_at refines their
        whole-second stamps by receive time: an unhold delivered before its hold within the
        same second would be dated first and leave the customer held. Each fact is dated
        between its neighbours in sequence that were already seen.
        """
        if not events:
            return events
        seen = self._info(sid).conf_seq
        at = events[0].occurred_at
        later = [t for s, t in seen.items() if s > seq]
        earlier = [t for s, t in seen.items() if s < seq]
        if later and at >= min(later):
            at = min(later) - timedelta(microseconds=1)
        elif earlier and at <= max(earlier):
            at = max(earlier) + timedelta(microseconds=1)
        seen[seq] = at
        return [replace(e, occurred_at=at) for e in events]

    # ---- REST --------------------------------------------------------------------------

    async def _rest(self, method: str, path: str,
                    form: list[tuple[str, str]] | Mapping[str, str] | None = None,
                    query: Mapping[str, str] | None = None) -> dict[str, Any]:
        """One REST call with retries; 404 -> CallNotFound, other errors AdapterError.

        Retried: 429 (Twilio did nothing), connection failures before the request left,
        and, for requests that are safe to repeat (GET, updates of an existing
        resource), 5xx and lost answers. A create (`POST .../Calls.json`, Participants,
        Recordings) whose answer is lost is not repeated: it may have happened, and a
        second one would ring the customer twice.

        `path` is relative to the account (`Calls.json`), or a URI from a Twilio answer
        (`next_page_uri`: `/2010-04-01/Accounts/AC.../Calls.json?...&PageToken=...`).
        """
        if self._session is None:
            raise AdapterError(f"twilio adapter {self.name} is not started")
        if path.startswith("/"):
            url = self._api + path
        else:
            url = f"{self._api}/{API_VERSION}/Accounts/{self._account}/{path}"
        data = list(form.items()) if isinstance(form, Mapping) else form
        repeatable = method == "GET" or not path.endswith(("Calls.json", "Participants.json", "Recordings.json"))
        delay = 0.2
        for attempt in range(self._max_retries + 1):
            try:
                async with self._session.request(method, url, data=data, params=query) as resp:
                    try:
                        body = await resp.json(content_type=None)
                    except ValueError:
                        body = None
                    if resp.status < 300:
                        return body if isinstance(body, dict) else {}
                    code, message = wire.error_message(resp.status, body)
                    retry = resp.status == 429 or (resp.status >= 500 and repeatable)
                    if not retry or attempt == self._max_retries:
                        if resp.status == 404:
                            raise CallNotFound(f"twilio {path}: {message} (code {code})")
                        raise AdapterError(f"twilio {method} {path} failed: "
                                           f"{_refusal(resp.status, code, message, resp.content_type)}")
                    wait = _retry_after(resp.headers.get("Retry-After"), delay)
            except (aiohttp.ClientError, TimeoutError) as exc:
                unsent = isinstance(exc, aiohttp.ClientConnectorError)
                if attempt == self._max_retries or not (unsent or repeatable):
                    raise AdapterError(f"twilio {method} {path} failed: {exc!r}") from exc
                wait = delay
            self.counters["rest_retry"] += 1
            log.info("twilio_rest_retry", provider=self.name, path=path, attempt=attempt + 1)
            await asyncio.sleep(wait * (1 + random.random() / 2))
            delay *= 2
        raise AdapterError("unreachable")

    async def _quiet_hangup(self, sid: str, status: str = "completed") -> None:
        with contextlib.suppress(AdapterError):
            await self._rest("POST", f"Calls/{sid}.json", {"Status": status})

    # ---- commands ----------------------------------------------------------------------

    async def execute(self, command: Command) -> CommandResult:
        check_capability(self.type, self.capabilities, command)
        handler = {
            Connect: self._connect, Originate: self._originate, Hangup: self._hangup,
            Hold: self._hold, Unhold: self._hold, BlindTransfer: self._transfer, Record: self._record,
            VoicemailDrop: self._voicemail, Monitor: self._monitor, Play: self._play,
        }.get(type(command))
        if handler is None:
            raise Unsupported(self.type, command.name)
        return await handler(command)

    def _from_number(self, info: _CallInfo) -> str:
        return self._caller_id or info.number or "client:cti"

    async def _connect(self, cmd: Connect) -> CommandResult:
        sid = cmd.provider_call_id
        info = self._info(sid)
        twiml = wire.conference_twiml(sid, self.url("conference", parent=sid), self._hold_music)
        await self._rest("POST", f"Calls/{sid}.json", {"Twiml": twiml})
        legs: list[str] = []
        for agent, endpoint in cmd.targets:
            form = wire.participant_form(
                frm=self._from_number(info), to=endpoint, label=f"agent:{agent}",
                status_url=self.url("status", role="agent", parent=sid, agent=agent),
                timeout_s=cmd.timeout_s, end_on_exit=True)
            # create accepts the conference's friendly name (Twilio creates it if needed)
            part = await self._rest("POST", f"Conferences/{sid}/Participants.json", _multi(form))
            info.conference = str(part.get("conference_sid") or "") or info.conference
            leg = str(part.get("call_sid") or "")
            if leg:
                info.agent_legs[leg] = agent
                legs.append(leg)
            if info.answered_leg is not None and info.answered_leg != leg:
                # ring-all: an agent answered while this leg was being created, after the
                # others were cancelled; this one (and any not created yet) must not ring on
                if leg:
                    self._spawn(self._quiet_hangup(leg, "canceled"))
                break
        return CommandResult(provider_call_id=sid, detail={"legs": legs})

    async def _originate(self, cmd: Originate) -> CommandResult:
        to = wire.to_e164(cmd.to_number, self._wctx.region) or cmd.to_number
        agent = cmd.agent or wire.agent_for(cmd.agent_endpoint, self._wctx)
        caller = cmd.caller_id or self._caller_id or to
        customer_cb = self.url("status", role="customer", cid=cmd.call_id, agent=agent)
        form = {
            "To": cmd.agent_endpoint, "From": caller, "Timeout": str(cmd.timeout_s),
            "Twiml": wire.dial_twiml(to, caller_id=caller, status_url=customer_cb),
            "StatusCallback": self.url("status", role="originate", cid=cmd.call_id, agent=agent, to=to),
            "StatusCallbackEvent": "initiated ringing answered completed",
        }
        call = await self._rest("POST", "Calls.json", _multi(form))
        sid = str(call.get("sid") or "")
        if not sid:
            raise AdapterError("twilio create call returned no sid")
        info = self._info(sid)
        info.call_id = cmd.call_id
        info.number = caller
        info.outbound = True
        return CommandResult(provider_call_id=sid)

    async def _hangup(self, cmd: Hangup) -> CommandResult:
        await self._rest("POST", f"Calls/{cmd.provider_call_id}.json", {"Status": "completed"})
        return CommandResult(provider_call_id=cmd.provider_call_id)

    async def _hold(self, cmd: Hold | Unhold) -> CommandResult:
        sid = cmd.provider_call_id
        info = self._calls.get(sid)
        if info is not None and info.call_id and not info.agent_legs:
            # a click-to-call is a plain <Dial>, not a conference: nothing to put on hold
            raise AdapterError(f"call {sid} is not in a conference; twilio holds only connected inbound calls")
        form = {"Hold": "true" if isinstance(cmd, Hold) else "false"}
        if isinstance(cmd, Hold) and self._hold_music:
            form["HoldUrl"] = self._hold_music
        conf = await self._conference_sid(sid)
        await self._rest("POST", f"Conferences/{conf}/Participants/customer.json", form)
        return CommandResult(provider_call_id=sid)

    async def _play(self, cmd: Play) -> CommandResult:
        """Announce `media` (an audio or TwiML URL) to the customer inside the conference."""
        sid = cmd.provider_call_id
        info = self._calls.get(sid)
        if info is not None and info.call_id and not info.agent_legs:
            raise AdapterError(f"call {sid} is not in a conference; twilio plays only into connected inbound calls")
        if not cmd.media.startswith(("http://", "https://")):
            raise AdapterError(f"twilio plays media by URL, not {cmd.media!r}")
        conf = await self._conference_sid(sid)
        await self._rest("POST", f"Conferences/{conf}/Participants/customer.json",
                         {"AnnounceUrl": cmd.media, "AnnounceMethod": "GET"})
        return CommandResult(provider_call_id=sid)

    async def _conference_sid(self, sid: str) -> str:
        """The ConferenceSid (CF...) of the conference named after call `sid`.

        Participant updates address a conference by its sid only (creates also take the
        friendly name). It is learnt from participant creates and conference callbacks;
        after a restart it is asked of Twilio (the conference in progress with that name).
        """
        info = self._calls.get(sid)
        if info is not None and info.conference:
            return info.conference
        page = await self._rest("GET", "Conferences.json", query={"FriendlyName": sid, "Status": "in-progress"})
        found = [str(c["sid"]) for c in page.get("conferences", []) if c.get("sid")]
        if not found:
            raise CallNotFound(f"twilio: no conference in progress for call {sid}")
        self._info(sid).conference = found[0]
        return found[0]

    async def _transfer(self, cmd: BlindTransfer) -> CommandResult:
        sid = cmd.provider_call_id
        info = self._info(sid)
        target = wire.to_e164(cmd.target, self._wctx.region) or cmd.target
        if target.startswith("+") or target.startswith(("client:", "sip:")):
            twiml = wire.dial_twiml(target, caller_id=self._caller_id)
        else:
            twiml = wire.dial_twiml("client:" + target, caller_id=self._caller_id)
        info.transferred = True
        try:
            await self._rest("POST", f"Calls/{sid}.json", {"Twiml": twiml})
        except AdapterError:
            info.transferred = False
            raise
        await self._publish([CallEvent(
            event_id=make_event_id(self.name, sid, "transferred", target),
            provider=self.name, provider_call_id=sid,
            call_id=info.call_id or make_call_id(self.tenant, self.name, sid),
            kind=EventKind.TRANSFERRED, occurred_at=self._clock.now(), tenant=self.tenant,
            agent=wire.agent_for(target, self._wctx) if target.startswith("client:") else None,
            data={"target": target},
        )])
        return CommandResult(provider_call_id=sid)

    async def _record(self, cmd: Record) -> CommandResult:
        sid = cmd.provider_call_id
        info = self._info(sid)
        if cmd.action == "start":
            form = {
                # `first`: who the dual file's first channel is (this call's own party)
                "RecordingStatusCallback": self.url("recording", parent=sid, cid=info.call_id,
                                                    first="agent" if info.outbound else "customer"),
                "RecordingStatusCallbackEvent": "in-progress completed absent",
                "RecordingChannels": "dual",
            }
            rec = await self._rest("POST", f"Calls/{sid}/Recordings.json", _multi(form))
            info.recording = str(rec.get("sid") or "")
            info.record_ops = 0
            status = "in-progress"
        elif cmd.action in ("stop", "pause", "resume"):
            rsid = info.recording or "Twilio.CURRENT"
            want = {"stop": "stopped", "pause": "paused", "resume": "in-progress"}[cmd.action]
            rec = await self._rest("POST", f"Calls/{sid}/Recordings/{rsid}.json", {"Status": want})
            info.recording = str(rec.get("sid") or rsid)
            info.record_ops += 1
            status = str(rec.get("status") or want)
        else:
            raise AdapterError(f"unknown record action {cmd.action!r} (start|stop|pause|resume)")
        if info.recording:
            await self._publish([wire.recording_command_event(
                self._wctx, sid, info.recording, status, self._clock.now(), info.record_ops, info.call_id)])
        return CommandResult(provider_call_id=sid, detail={"recording": info.recording})

    async def _voicemail(self, cmd: VoicemailDrop) -> CommandResult:
        info = self._info(cmd.provider_call_id)
        info.voicemail = True
        await self._rest("POST", f"Calls/{cmd.provider_call_id}.json",
                         {"Twiml": wire.play_hangup_twiml(cmd.media)})
        return CommandResult(provider_call_id=cmd.provider_call_id)

    async def _monitor(self, cmd: Monitor) -> CommandResult:
        sid = cmd.provider_call_id
        info = self._info(sid)
        if cmd.mode == "stop":
            if not cmd.session_id:
                raise AdapterError("monitor stop needs the session_id of the monitor session")
            await self._rest("POST", f"Calls/{cmd.session_id}.json", {"Status": "completed"})
            return CommandResult(provider_call_id=sid, session_id=cmd.session_id)
        coach = info.answered_leg or next(iter(info.agent_legs), None)
        if cmd.mode == "whisper" and not coach:
            raise AdapterError(f"call {sid} has no agent leg to whisper to")
        if cmd.session_id:  # switch mode of a running session
            conf = await self._conference_sid(sid)
            await self._rest("POST", f"Conferences/{conf}/Participants/{cmd.session_id}.json",
                             wire.monitor_form(cmd.mode, coach))
            return CommandResult(provider_call_id=sid, session_id=cmd.session_id)
        supervisor = wire.agent_for(cmd.supervisor_endpoint, self._wctx) or cmd.supervisor_endpoint
        form = wire.participant_form(
            frm=self._from_number(info), to=cmd.supervisor_endpoint,
            label=f"monitor:{cmd.mode}:{supervisor}",
            coach=coach if cmd.mode == "whisper" else None, muted=cmd.mode == "listen")
        part = await self._rest("POST", f"Conferences/{sid}/Participants.json", form)
        return CommandResult(provider_call_id=sid, session_id=str(part.get("call_sid") or ""))

    # ---- resync ------------------------------------------------------------------------

    async def _resync_quietly(self) -> None:
        try:
            await self.resync()
        except AdapterError as exc:
            log.warning("twilio_resync_failed", provider=self.name, error=str(exc))
        finally:
            self.synced.set()

    async def resync(self) -> list[str]:
        """List in-progress calls; close the calls we tracked that ended meanwhile.

        Returns the CallSids Twilio reports in progress.
        """
        active: list[str] = []
        page: dict[str, Any] = await self._rest("GET", "Calls.json", query={"Status": "in-progress",
                                                                           "PageSize": "200"})
        while True:
            active += [str(c["sid"]) for c in page.get("calls", []) if c.get("sid")]
            nxt = page.get("next_page_uri")
            if not nxt:
                break
            # through _rest like the first page: a 429 or a 5xx (often an HTML page) on page
            # 2 is retried, then an error, never a silently short list of calls
            page = await self._rest("GET", str(nxt))
        for sid, info in list(self._calls.items()):
            if info.ended or sid in active:
                continue
            try:
                call = await self._rest("GET", f"Calls/{sid}.json")
            except CallNotFound:
                continue
            status = str(call.get("status") or "")
            if status in wire.TERMINAL:
                params = {"CallSid": sid, "CallStatus": status,
                          "CallDuration": str(call.get("duration") or 0)}
                query = {"role": "originate", "cid": info.call_id or ""} if info.call_id else {}
                await self._publish(wire.status_events(
                    params, query, self._wctx, self._clock.now(), answered=info.answered,
                    transferred=info.transferred, voicemail=info.voicemail))
        return active


def _multi(form: Mapping[str, str]) -> list[tuple[str, str]]:
    """Twilio takes list-valued parameters (StatusCallbackEvent) as repeated keys."""
    out: list[tuple[str, str]] = []
    for k, v in form.items():
        if k.endswith("CallbackEvent"):
            out += [(k, part) for part in v.split()]
        else:
            out.append((k, v))
    return out


def _refusal(status: int, code: int | None, message: str, content_type: str) -> str:
    """`HTTP 429 Too Many Requests (code 20429)`; an answer that is no Twilio error (the HTML
    page of a load balancer in front of the API) is named by its type."""
    if code is None and message == f"HTTP {status}":
        return f"HTTP {status} ({content_type or 'empty'} answer, not a Twilio error)"
    return f"HTTP {status} {message}" + (f" (code {code})" if code is not None else "")


def _retry_after(raw: str | None, default: float) -> float:
    try:
        return min(float(raw), 5.0) if raw else default
    except ValueError:
        return default
