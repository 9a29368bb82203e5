"""Frozen domain types shared by every stage.

Events are facts (never mutated); a `Call` is computed from them by
`cti.calls.state.fold`. Timestamps are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

# Namespace for deterministic ids: the same provider fact always gets the same id,
# on any node, so duplicates are caught by a unique constraint.
_NS = uuid.UUID("6f0c6b3e-7d0e-4f53-9c1c-0a4c3f1a2b7d")


def make_call_id(tenant: str, provider: str, provider_call_id: str) -> str:
    return str(uuid.uuid5(_NS, f"call|{tenant}|{provider}|{provider_call_id}"))


def make_event_id(provider: str, *parts: object) -> str:
    return str(uuid.uuid5(_NS, "evt|" + provider + "|" + "|".join(str(p) for p in parts)))


def utcnow() -> datetime:
    return datetime.now(UTC)


class EventKind(StrEnum):
    CREATED = "created"
    QUEUED = "queued"
    RINGING = "ringing"          # an agent's endpoint rings (agent set); ring-all: one per agent
    NO_ANSWER = "no_answer"      # that agent's leg stopped ringing unanswered (data.reason)
    ANSWERED = "answered"
    HELD = "held"
    RESUMED = "resumed"
    TRANSFERRED = "transferred"
    ENDED = "ended"
    RECORDING_STARTED = "recording_started"
    RECORDING_PAUSED = "recording_paused"
    RECORDING_RESUMED = "recording_resumed"
    RECORDING_STOPPED = "recording_stopped"
    RECORDING_READY = "recording_ready"
    PLAYBACK_FINISHED = "playback_finished"
    DTMF = "dtmf"
    MONITOR_STARTED = "monitor_started"
    MONITOR_STOPPED = "monitor_stopped"
    AGENT_STATE_CHANGED = "agent_state_changed"


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"


class CallState(StrEnum):
    NEW = "new"
    QUEUED = "queued"
    RINGING = "ringing"
    ANSWERED = "answered"
    HELD = "held"
    ENDED = "ended"


class Outcome(StrEnum):
    ANSWERED = "answered"
    MISSED = "missed"
    ABANDONED = "abandoned"
    VOICEMAIL = "voicemail"
    BUSY = "busy"
    FAILED = "failed"
    CANCELED = "canceled"


class EndCause(StrEnum):
    """Why a call ended, as carried in `data["cause"]` of an `ended` event."""

    NORMAL = "normal"            # hung up after (or without) an answer, nothing special
    CALLER_HANGUP = "caller_hangup"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    CANCELED = "canceled"        # the originating side gave up before answer
    FAILED = "failed"            # congestion, unreachable, invalid number
    VOICEMAIL = "voicemail"      # reached a voicemail (or we dropped a message into one)
    TRANSFERRED = "transferred"  # left our system by a blind transfer


class AgentState(StrEnum):
    OFFLINE = "offline"
    AVAILABLE = "available"
    RINGING = "ringing"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    AWAY = "away"


class Role(StrEnum):
    AGENT = "agent"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


def _dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    return datetime.fromisoformat(value)


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One fact reported by a provider (or by us, for agent states), normalized."""

    event_id: str
    provider: str
    provider_call_id: str
    call_id: str
    kind: EventKind
    occurred_at: datetime
    seq: int = 0
    tenant: str = "default"
    agent: str | None = None
    queue: str | None = None
    direction: Direction | None = None
    from_number: str | None = None
    to_number: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # spelled out: dataclasses.asdict deep-copies recursively and costs ~100 us per event,
        # on every event every stage publishes
        return {
            "event_id": self.event_id,
            "provider": self.provider,
            "provider_call_id": self.provider_call_id,
            "call_id": self.call_id,
            "kind": str(self.kind),
            "occurred_at": self.occurred_at.isoformat(),
            "seq": self.seq,
            "tenant": self.tenant,
            "agent": self.agent,
            "queue": self.queue,
            "direction": str(self.direction) if self.direction else None,
            "from_number": self.from_number,
            "to_number": self.to_number,
            "data": copy.deepcopy(self.data) if self.data else {},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CallEvent:
        """Build from a dict (bus message, fixture). Raises ValueError naming the bad field."""
        try:
            return cls(
                event_id=str(d["event_id"]),
                provider=str(d["provider"]),
                provider_call_id=str(d["provider_call_id"]),
                call_id=str(d["call_id"]),
                kind=EventKind(d["kind"]),
                occurred_at=_dt(d["occurred_at"]),  # type: ignore[arg-type]
                seq=int(d.get("seq") or 0),
                tenant=str(d.get("tenant") or "default"),
                agent=d.get("agent"),
                queue=d.get("queue"),
                direction=Direction(d["direction"]) if d.get("direction") else None,
                from_number=d.get("from_number"),
                to_number=d.get("to_number"),
                data=dict(d.get("data") or {}),
            )
        except KeyError as exc:
            raise ValueError(f"call event is missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"call event has an invalid field: {exc}") from None


@dataclass(frozen=True, slots=True)
class Call:
    """A call record: the fold of its events (see cti.calls.state)."""

    call_id: str
    tenant: str
    provider: str
    provider_call_id: str
    direction: Direction
    state: CallState
    from_number: str | None = None
    to_number: str | None = None
    queue: str | None = None
    agent: str | None = None
    outcome: Outcome | None = None
    end_cause: str | None = None
    created_at: datetime | None = None
    queued_at: datetime | None = None
    ringing_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    ring_s: float = 0.0
    talk_s: float = 0.0
    hold_s: float = 0.0
    wait_s: float = 0.0
    recording: str | None = None
    recording_state: str | None = None  # recording | paused | stopped | ready
    transferred_to: str | None = None
    agents_rung: tuple[str, ...] = ()
    events: int = 0
    last_event_at: datetime | None = None

    @property
    def is_ended(self) -> bool:
        return self.state is CallState.ENDED

    def to_dict(self) -> dict[str, Any]:
        # field names precomputed: `fields()` per call was half of this (one per call update)
        out: dict[str, Any] = {}
        for name in _CALL_FIELD_NAMES:
            v = getattr(self, name)
            if isinstance(v, datetime):
                v = v.isoformat()
            elif isinstance(v, StrEnum):
                v = str(v)
            elif isinstance(v, tuple):
                v = list(v)
            out[name] = v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Call:
        """The inverse of `to_dict`; also takes a `calls` table row (datetimes, extra columns)."""
        kw = {k: v for k, v in d.items() if k in _CALL_FIELDS}
        for k in _CALL_TIMES:
            v = _dt(kw.get(k))
            kw[k] = v.replace(tzinfo=UTC) if v is not None and v.tzinfo is None else v
        kw["direction"] = Direction(kw.get("direction") or "inbound")
        kw["state"] = CallState(kw.get("state") or "new")
        kw["outcome"] = Outcome(kw["outcome"]) if kw.get("outcome") else None
        kw["agents_rung"] = tuple(kw.get("agents_rung") or ())
        for k in ("ring_s", "talk_s", "hold_s", "wait_s"):
            kw[k] = float(kw.get(k) or 0.0)
        kw["events"] = int(kw.get("events") or 0)
        return cls(**kw)


_CALL_FIELD_NAMES = tuple(f.name for f in fields(Call))
_CALL_FIELDS = frozenset(_CALL_FIELD_NAMES)
_CALL_TIMES = ("created_at", "queued_at", "ringing_at", "answered_at", "ended_at", "last_event_at")


@dataclass(frozen=True, slots=True)
class Agent:
    id: str
    name: str
    team: str | None = None
    skills: dict[str, int] = field(default_factory=dict)
    endpoints: dict[str, str] = field(default_factory=dict)  # provider name -> endpoint
    capacity: int = 1
    tenant: str = "default"


@dataclass(frozen=True, slots=True)
class Contact:
    id: str
    name: str
    phones: tuple[str, ...] = ()  # E.164
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    role: str | None = None
    account_id: str | None = None
    account_name: str | None = None
    owner: str | None = None  # agent id of the account/contact owner
    url: str | None = None
    kind: str = "contact"  # contact | account | lead
    fields: dict[str, Any] = field(default_factory=dict)  # extra fields routing rules may use


@dataclass(frozen=True, slots=True)
class Activity:
    """The call as it lands in the customer's history (one per call)."""

    call_id: str
    subject: str
    direction: Direction
    from_number: str | None
    to_number: str | None
    duration_s: float
    outcome: Outcome | None
    contact_id: str | None = None
    account_id: str | None = None
    agent: str | None = None
    disposition: str | None = None
    notes: str | None = None
    recording_url: str | None = None
    transcript: str | None = None
    summary: dict[str, Any] | None = None
    crm_ref: str | None = None  # the CRM's id for it once pushed (lets a connector update without a search)
    # when the call started (UTC): the CRM dates the record with it, never with the push time,
    # so activities pushed hours late (a CRM outage) still land in the history in call order
    started_at: datetime | None = None
