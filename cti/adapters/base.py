"""The adapter contract: every provider translates its wire protocol into
`CallEvent`s and carries out `Command`s. Adapters never touch the store, the CRM
or browser websockets (DESIGN.md, principle 1).

Registering a provider: decorate the adapter class with `@register("asterisk")`
in its `adapter.py`; `cti.adapters.registry.load(type)` imports it by name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, Protocol, runtime_checkable

from cti.model import CallEvent


class Capability(StrEnum):
    CONNECT = "connect"    # deliver a waiting call to one or more agent endpoints
    ANSWER = "answer"      # answer from the panel (softphone-style providers)
    ORIGINATE = "originate"
    HANGUP = "hangup"
    HOLD = "hold"
    BLIND_TRANSFER = "blind_transfer"
    ATTENDED_TRANSFER = "attended_transfer"
    RECORD = "record"              # start/stop
    RECORD_PAUSE = "record_pause"  # pause/resume
    PLAY = "play"
    VOICEMAIL_DROP = "voicemail_drop"
    MONITOR_LISTEN = "monitor_listen"
    MONITOR_WHISPER = "monitor_whisper"
    MONITOR_BARGE = "monitor_barge"
    TAKEOVER = "takeover"
    DTMF = "dtmf"


class AdapterError(Exception):
    """A command reached the provider and failed there (message says why)."""


class Unsupported(AdapterError):
    """The provider cannot do this command (see the adapter's capabilities)."""

    def __init__(self, provider_type: str, command: str, detail: str = "") -> None:
        self.provider_type = provider_type
        self.command = command
        msg = f"{provider_type} adapter does not support {command}"
        super().__init__(msg + (f": {detail}" if detail else ""))


class CallNotFound(AdapterError):
    """The provider does not know this call (it ended, or never existed)."""


# ---- commands: frozen values, one class per verb ---------------------------------

@dataclass(frozen=True, slots=True)
class Command:
    name: ClassVar[str] = "command"
    capability: ClassVar[Capability | None] = None


@dataclass(frozen=True, slots=True)
class Connect(Command):
    """Ring agents for a waiting inbound call and bridge the first who answers.

    `targets` is ((agent_id, endpoint), ...): one for most strategies, several for
    ring-all. The adapter emits `ringing` (agent=...) per target, then `answered`
    (agent=the one who took it) or `no_answer` per target after `timeout_s`.
    """

    provider_call_id: str
    targets: tuple[tuple[str, str], ...]
    timeout_s: float = 15.0
    name: ClassVar[str] = "connect"
    capability: ClassVar[Capability | None] = Capability.CONNECT


@dataclass(frozen=True, slots=True)
class Answer(Command):
    provider_call_id: str
    agent: str
    name: ClassVar[str] = "answer"
    capability: ClassVar[Capability | None] = Capability.ANSWER


@dataclass(frozen=True, slots=True)
class Originate(Command):
    """Click-to-call: ring the agent's endpoint first, then the customer, bridge them."""

    agent_endpoint: str
    to_number: str               # E.164
    call_id: str                 # pre-allocated by the control service; events carry it
    caller_id: str | None = None
    agent: str | None = None
    timeout_s: int = 30
    name: ClassVar[str] = "originate"
    capability: ClassVar[Capability | None] = Capability.ORIGINATE


@dataclass(frozen=True, slots=True)
class Hangup(Command):
    provider_call_id: str
    name: ClassVar[str] = "hangup"
    capability: ClassVar[Capability | None] = Capability.HANGUP


@dataclass(frozen=True, slots=True)
class Hold(Command):
    provider_call_id: str
    name: ClassVar[str] = "hold"
    capability: ClassVar[Capability | None] = Capability.HOLD


@dataclass(frozen=True, slots=True)
class Unhold(Command):
    provider_call_id: str
    name: ClassVar[str] = "unhold"
    capability: ClassVar[Capability | None] = Capability.HOLD


@dataclass(frozen=True, slots=True)
class BlindTransfer(Command):
    provider_call_id: str
    target: str  # endpoint or E.164 number
    name: ClassVar[str] = "blind_transfer"
    capability: ClassVar[Capability | None] = Capability.BLIND_TRANSFER


@dataclass(frozen=True, slots=True)
class AttendedTransfer(Command):
    """step='consult' dials target while the customer holds; 'complete' bridges; 'cancel' returns."""

    provider_call_id: str
    target: str
    step: str = "consult"  # consult | complete | cancel
    name: ClassVar[str] = "attended_transfer"
    capability: ClassVar[Capability | None] = Capability.ATTENDED_TRANSFER


@dataclass(frozen=True, slots=True)
class Record(Command):
    provider_call_id: str
    action: str = "start"  # start | stop | pause | resume
    name: ClassVar[str] = "record"
    capability: ClassVar[Capability | None] = Capability.RECORD


@dataclass(frozen=True, slots=True)
class Play(Command):
    provider_call_id: str
    media: str  # provider media reference (sound:..., file path, URL)
    name: ClassVar[str] = "play"
    capability: ClassVar[Capability | None] = Capability.PLAY


@dataclass(frozen=True, slots=True)
class VoicemailDrop(Command):
    """The agent leaves; `media` plays to the callee's voicemail, then the call ends."""

    provider_call_id: str
    media: str
    name: ClassVar[str] = "voicemail_drop"
    capability: ClassVar[Capability | None] = Capability.VOICEMAIL_DROP


@dataclass(frozen=True, slots=True)
class Monitor(Command):
    """Supervisor monitoring. mode: listen | whisper | barge | takeover | stop."""

    provider_call_id: str
    supervisor_endpoint: str
    mode: str = "listen"
    session_id: str | None = None  # returned by the first Monitor, passed to switch/stop
    name: ClassVar[str] = "monitor"
    capability: ClassVar[Capability | None] = Capability.MONITOR_LISTEN


@dataclass(frozen=True, slots=True)
class SendDtmf(Command):
    provider_call_id: str
    digits: str
    name: ClassVar[str] = "dtmf"
    capability: ClassVar[Capability | None] = Capability.DTMF


MONITOR_CAPABILITY = {
    "listen": Capability.MONITOR_LISTEN,
    "whisper": Capability.MONITOR_WHISPER,
    "barge": Capability.MONITOR_BARGE,
    "takeover": Capability.TAKEOVER,
}


def after_latest(last_at: datetime | None, at: datetime) -> datetime:
    """The time of a fact we observe ourselves (a command's reply, a stop we ordered): `at`,
    or just after the provider's latest timestamp for the call if `at` is not later. Host
    clock skew then cannot reorder the call's facts; strictly after, because a tie would be
    broken by the provider's sequence, which our own facts lack."""
    if last_at is not None and at <= last_at:
        return last_at + timedelta(microseconds=1)
    return at


def required_capability(command: Command) -> Capability | None:
    """The capability a command needs (monitor depends on its mode; record pause/resume too)."""
    if isinstance(command, Monitor):
        if command.mode == "stop":
            return None
        return MONITOR_CAPABILITY.get(command.mode, Capability.MONITOR_LISTEN)
    if isinstance(command, Record) and command.action in ("pause", "resume"):
        return Capability.RECORD_PAUSE
    return command.capability


@dataclass(frozen=True, slots=True)
class CommandResult:
    ok: bool = True
    provider_call_id: str | None = None
    session_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


# ---- the adapter protocol ---------------------------------------------------------

@runtime_checkable
class Adapter(Protocol):
    """What the app needs from every provider adapter.

    Lifecycle: `await start()` (spawns its own reconnect supervisor; must not block
    until connected), `events()` yields normalized events until `stop()`,
    `execute(cmd)` runs a command or raises Unsupported / CallNotFound / AdapterError.
    """

    type: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]]
    name: str      # the [[providers]] name from config
    tenant: str

    @property
    def ready(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def events(self) -> AsyncIterator[CallEvent]: ...

    async def execute(self, command: Command) -> CommandResult: ...


def check_capability(adapter_type: str, caps: frozenset[Capability], command: Command) -> None:
    """Raise Unsupported unless `caps` covers `command` (call first thing in execute)."""
    cap = required_capability(command)
    if cap is not None and cap not in caps:
        detail = f"mode {command.mode}" if isinstance(command, Monitor) else ""
        raise Unsupported(adapter_type, command.name, detail)


async def run_handler(adapter: Any, command: Command, *, connected: bool) -> CommandResult:
    """The `execute` of adapters that implement one `_do_<command class>` method per command:
    capability check, connection check, dispatch."""
    check_capability(adapter.type, adapter.capabilities, command)
    if not connected:
        raise AdapterError(f"{adapter.type} {adapter.name}: not connected")
    handler = getattr(adapter, f"_do_{type(command).__name__.lower()}", None)
    if handler is None:
        raise AdapterError(f"{adapter.type} adapter has no handler for {command.name}")
    return await handler(command)


_REGISTRY: dict[str, type] = {}
# Adapter modules by type, imported lazily so that a missing optional dependency of
# one provider (pyVoIP, say) never breaks the others.
_MODULES = {
    "simulator": "cti.adapters.simulator.adapter",
    "asterisk": "cti.adapters.asterisk.adapter",
    "freeswitch": "cti.adapters.freeswitch.adapter",
    "twilio": "cti.adapters.twilio.adapter",
    "sip": "cti.adapters.sip.adapter",
}


def register(type_name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        cls.type = type_name  # type: ignore[attr-defined]
        _REGISTRY[type_name] = cls
        return cls

    return deco


def adapter_class(type_name: str) -> type:
    if type_name not in _REGISTRY:
        module = _MODULES.get(type_name)
        if module is None:
            raise KeyError(f"unknown provider type {type_name!r} (known: {', '.join(sorted(_MODULES))})")
        import importlib

        importlib.import_module(module)
    return _REGISTRY[type_name]


def known_types() -> list[str]:
    return sorted(_MODULES)


@dataclass(frozen=True, slots=True)
class AdapterContext:
    """What an adapter may know of the rest of the system (passed at construction).

    Adapters are built as `cls(settings, ctx)` where `settings` is the provider's
    `cti.config.ProviderSettings` (extra keys of its [[providers]] table are in
    `settings.options`).
    """

    tenant: str = "default"
    default_region: str = "FR"
    clock: Any = None                                              # cti.clock.Clock
    agent_endpoints: dict[str, str] = field(default_factory=dict)  # endpoint -> agent id
    queue_numbers: dict[str, str] = field(default_factory=dict)    # dialled number -> queue
    public_url: str = "http://127.0.0.1:8080"
    storage_dir: str = "./recordings"
