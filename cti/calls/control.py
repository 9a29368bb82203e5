"""Call control: the service layer between the API and the adapters.

Every action is authorized here (DESIGN principle 7): an agent controls only
their own calls, a supervisor their teams', an admin their tenant's; anything
else is "not found". Provider problems come back as clear errors:
`Unsupported` -> 422 naming provider and command, an ended call -> 409.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from cti.adapters.base import (
    AdapterError,
    Answer,
    AttendedTransfer,
    BlindTransfer,
    CallNotFound,
    Command,
    CommandResult,
    Hangup,
    Hold,
    Monitor,
    Originate,
    Record,
    SendDtmf,
    Unhold,
    Unsupported,
    VoicemailDrop,
    check_capability,
)
from cti.model import Call, CallState, make_call_id
from cti.phone import InvalidNumber, check_dialable
from cti.web.auth import Principal

log = structlog.get_logger(__name__)

MONITOR_MODES = ("listen", "whisper", "barge", "takeover")


class ControlError(Exception):
    """An action refused with an HTTP-like status (404, 409, 422, 429)."""

    def __init__(self, status: int, message: str, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.extra = extra


class RateLimiter:
    """Sliding window per key (click-to-call per agent, failed auth per client)."""

    def __init__(self, limit: int, window_s: float = 60.0, now: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._now = now
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str) -> float:
        """Record a hit; return 0 if allowed, else the seconds to wait."""
        now = self._now()
        q = self._hits.setdefault(key, deque())
        while q and now - q[0] >= self.window_s:
            q.popleft()
        if len(q) >= self.limit:
            return max(0.0, self.window_s - (now - q[0]))
        q.append(now)
        return 0.0

    def blocked_for(self, key: str) -> float:
        now = self._now()
        q = self._hits.get(key)
        if not q:
            return 0.0
        while q and now - q[0] >= self.window_s:
            q.popleft()
        return max(0.0, self.window_s - (now - q[0])) if len(q) >= self.limit else 0.0


@dataclass
class MonitorSession:
    id: str
    call_id: str
    supervisor: str
    agent: str | None
    endpoint: str
    mode: str
    provider_session: str | None


Dispatch = Callable[[str, Command], Awaitable[CommandResult]]
# (call id, the user asking) -> the stored call
CallLoader = Callable[[str, str], Awaitable[Call | None]]


class CallControl:
    def __init__(
        self,
        *,
        settings: Any,
        adapters: dict[str, Any],
        dispatch: Dispatch,
        load_call: CallLoader,
        team_of: Callable[[str | None], str | None],
        endpoints_of: Callable[[str], dict[str, str]],
        monitor_endpoint_of: Callable[[str], str | None] = lambda _u: None,
        audit: Callable[..., Awaitable[None]] | None = None,
        notify: Callable[..., Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.adapters = adapters
        self.dispatch = dispatch
        self.load_call = load_call
        self.team_of = team_of
        self.endpoints_of = endpoints_of
        self.monitor_endpoint_of = monitor_endpoint_of
        self.audit = audit
        self.notify = notify
        self.c2c_limit = RateLimiter(settings.auth.click_to_call_per_minute)
        self.monitors: dict[str, MonitorSession] = {}       # session id -> session
        self._monitor_by_call: dict[tuple[str, str], str] = {}  # (call, supervisor) -> session id

    # ---- helpers -------------------------------------------------------------
    async def _visible_call(self, p: Principal, call_id: str) -> Call:
        call = await self.load_call(call_id, p.user)
        if call is None or not p.can_control_call(call.agent, self.team_of(call.agent), call.tenant):
            raise ControlError(404, "call not found")
        return call

    def _capabilities(self, provider: str) -> frozenset:
        adapter = self.adapters.get(provider)
        return getattr(adapter, "capabilities", frozenset()) if adapter else frozenset()

    async def _run(self, provider: str, command: Command) -> CommandResult:
        adapter = self.adapters.get(provider)
        if adapter is not None:
            try:
                check_capability(adapter.type, adapter.capabilities, command)
            except Unsupported as exc:
                raise ControlError(422, str(exc), capability=command.name) from None
        try:
            return await self.dispatch(provider, command)
        except Unsupported as exc:
            raise ControlError(422, str(exc)) from None
        except CallNotFound as exc:
            raise ControlError(409, f"the call is no longer up at the provider: {exc}") from None
        except AdapterError as exc:
            raise ControlError(502, f"provider {provider} refused {command.name}: {exc}") from None

    # ---- click-to-call ---------------------------------------------------------
    async def click_to_call(self, p: Principal, to: Any, agent: str | None) -> dict[str, Any]:
        agent = agent or p.user
        if not isinstance(to, str) or not to.strip():
            raise ControlError(422, "'to' must be a phone number", field="to")
        if not p.can_control_call(agent, self.team_of(agent), p.tenant) or not self.endpoints_of(agent):
            raise ControlError(404, f"agent {agent} not found")
        try:
            number = check_dialable(to, self.settings.site.default_region, self.settings.security.blocked_prefixes)
        except InvalidNumber as exc:
            raise ControlError(422, f"cannot call {exc}", field="to") from None
        wait = self.c2c_limit.hit(f"{p.tenant}:{agent}")
        if wait:
            raise ControlError(429, "too many click-to-call requests", retry_after=int(wait) + 1)
        endpoints = self.endpoints_of(agent)
        provider = next((name for name in endpoints if name in self.adapters), None)
        if provider is None:
            raise ControlError(422, f"agent {agent} has no endpoint on a configured provider", field="agent")
        call_id = make_call_id(p.tenant, provider, f"c2c-{uuid.uuid4().hex}")
        await self._run(
            provider,
            Originate(agent_endpoint=endpoints[provider], to_number=number, call_id=call_id, agent=agent),
        )
        log.info("click_to_call", agent=agent, call_id=call_id, provider=provider)
        return {"call_id": call_id, "state": CallState.NEW.value, "to": number, "agent": agent}

    # ---- actions on a call --------------------------------------------------------
    async def act(self, p: Principal, call_id: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
        call = await self._visible_call(p, call_id)
        if action == "monitor":
            return await self.monitor(p, call, body)
        if call.is_ended:
            raise ControlError(409, f"call {call_id} has ended", state=call.state.value)
        pcid = call.provider_call_id
        command: Command
        if action == "answer":
            command = Answer(pcid, call.agent or p.user)
        elif action == "hangup":
            command = Hangup(pcid)
        elif action == "hold":
            command = Hold(pcid)
        elif action == "unhold":
            command = Unhold(pcid)
        elif action == "transfer":
            target = body.get("target")
            if not isinstance(target, str) or not target:
                raise ControlError(422, "'target' is required (agent id, endpoint or number)", field="target")
            target = self.endpoints_of(target).get(call.provider, target)
            mode = body.get("mode", "blind")
            if mode == "blind":
                command = BlindTransfer(pcid, target)
            elif mode in ("consult", "complete", "cancel"):
                command = AttendedTransfer(pcid, target, step=mode)
            else:
                raise ControlError(422, "'mode' must be blind, consult, complete or cancel", field="mode")
        elif action == "record":
            act = body.get("action", "start")
            if act not in ("start", "stop", "pause", "resume"):
                raise ControlError(422, "'action' must be start, stop, pause or resume", field="action")
            command = Record(pcid, act)
        elif action == "voicemail-drop":
            media = self._voicemail_media(body.get("message"))
            command = VoicemailDrop(pcid, media)
        elif action == "dtmf":
            digits = str(body.get("digits", ""))
            if not digits or any(c not in "0123456789*#ABCD" for c in digits):
                raise ControlError(422, "'digits' must be DTMF digits (0-9 * # A-D)", field="digits")
            command = SendDtmf(pcid, digits)
        else:
            raise ControlError(404, f"unknown action {action!r}")
        try:
            result = await self._run(call.provider, command)
        except ControlError as exc:
            # refused while the call was not (or no longer) in conversation: the call's state is
            # the reason (answering a call that is dialing out, holding one that still rings),
            # a conflict the client can act on, not a provider outage
            if exc.status == 502 and (action == "answer" or call.state not in (CallState.ANSWERED, CallState.HELD)):
                raise ControlError(409, exc.message, state=call.state.value) from None
            raise
        log.info("call_action", call_id=call_id, action=action, user=p.user)
        return {"ok": result.ok, "action": action, "call_id": call_id, **result.detail}

    def _voicemail_media(self, message: Any) -> str:
        messages = {m["id"]: m for m in self.voicemail_messages()}
        if not isinstance(message, str) or message not in messages:  # a list/object is unhashable
            raise ControlError(422, f"unknown voicemail message {message!r}", field="message")
        return messages[message]["media"]

    def voicemail_messages(self) -> list[dict[str, str]]:
        configured = getattr(self.settings, "voicemail_messages", None) or []
        return configured or [
            {"id": "callback", "name": "Please call us back", "media": "sound:cti/vm-callback"},
            {"id": "missed", "name": "Sorry we missed you", "media": "sound:cti/vm-missed"},
        ]

    # ---- supervision (issue 8) ---------------------------------------------------
    async def monitor(self, p: Principal, call: Call, body: dict[str, Any]) -> dict[str, Any]:
        if not p.can_monitor():
            raise ControlError(404, "call not found")
        mode = body.get("mode", "listen")
        key = (call.call_id, p.user)
        existing_id = self._monitor_by_call.get(key)
        existing = self.monitors.get(existing_id) if existing_id else None
        if mode == "stop":
            if existing is None:
                raise ControlError(409, "no monitoring session on this call")
            stop = Monitor(call.provider_call_id, existing.endpoint, "stop", existing.provider_session)
            await self._run(call.provider, stop)
            await self._end_monitor(existing, call)
            return {"ok": True, "session_id": existing.id, "mode": "stop"}
        if mode not in MONITOR_MODES:
            raise ControlError(422, "'mode' must be listen, whisper, barge, takeover or stop", field="mode")
        if call.is_ended:
            raise ControlError(409, f"call {call.call_id} has ended", state=call.state.value)
        if call.state not in (CallState.ANSWERED, CallState.HELD):
            raise ControlError(409, "only a call in conversation can be monitored", state=call.state.value)
        endpoint = body.get("endpoint") or (existing.endpoint if existing else None) or self.monitor_endpoint_of(p.user)
        if not endpoint:
            raise ControlError(422, f"supervisor {p.user} has no endpoint: pass 'endpoint' or set one in the profile",
                               field="endpoint")
        result = await self._run(
            call.provider,
            Monitor(call.provider_call_id, endpoint, mode, existing.provider_session if existing else None),
        )
        if existing is None:
            session = MonitorSession(
                id=uuid.uuid4().hex, call_id=call.call_id, supervisor=p.user, agent=call.agent,
                endpoint=endpoint, mode=mode, provider_session=result.session_id,
            )
            self.monitors[session.id] = session
            self._monitor_by_call[key] = session.id
        else:
            session = existing
            session.mode = mode
            session.provider_session = result.session_id or session.provider_session
        if self.audit:
            await self.audit(p, "monitor", call.call_id, {"mode": mode, "session": session.id, "agent": call.agent,
                                                           "endpoint": endpoint, "start": existing is None})
        if self.notify:
            await self.notify(call.tenant, session, active=True)
        return {"ok": True, "session_id": session.id, "mode": mode}

    async def _end_monitor(self, session: MonitorSession, call: Call) -> None:
        self.monitors.pop(session.id, None)
        self._monitor_by_call.pop((session.call_id, session.supervisor), None)
        if self.audit:
            await self.audit(None, "monitor_stop", call.call_id,
                             {"session": session.id, "supervisor": session.supervisor})
        if self.notify:
            await self.notify(call.tenant, session, active=False)

    async def on_call_ended(self, call: Call) -> None:
        """Close monitoring sessions of a call that ended (the provider tore them down)."""
        for sid in [s.id for s in self.monitors.values() if s.call_id == call.call_id]:
            await self._end_monitor(self.monitors[sid], call)
