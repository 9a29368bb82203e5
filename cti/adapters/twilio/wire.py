"""Twilio wire format: pure parsing of webhooks and building of TwiML / REST forms.

Nothing here does I/O. Every function takes the callback's form parameters (a
`dict[str, str]`), the query string our adapter put on the callback URL, and a
`WireContext`, and returns `CallEvent`s. Recorded callbacks in
`tests/adapters/twilio/fixtures/` replay through these functions.

Callback URLs carry our own routing facts in their query string, so that a
callback can be mapped without adapter memory (Twilio signs the whole URL, query
included, so they cannot be forged):

- `role=agent&parent=CA..&agent=alice`: the agent leg of an inbound call (a
  conference participant we created on Connect);
- `role=originate&cid=<call id>&agent=alice`: the agent leg of a click-to-call
  (the parent call we created);
- `role=customer&parent=CA..&cid=..&agent=..`: the customer leg of a click-to-call (`<Number>`);
- no role: the customer's own inbound call (voice/status callbacks).

Event ids are derived from provider facts (CallSid, status, RecordingSid, ...), so a
retried callback gives the same ids. The call's `ended` id is the same whichever leg
reports the end first: the first report wins and the others dedupe.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import unquote_plus
from xml.sax.saxutils import escape, quoteattr

from cti import phone
from cti.model import CallEvent, Direction, EndCause, EventKind, make_call_id, make_event_id


class WireError(ValueError):
    """A callback that cannot be understood (the message names what is wrong)."""


@dataclass(frozen=True, slots=True)
class WireContext:
    provider: str                      # the [[providers]] name
    tenant: str = "default"
    region: str = "FR"
    queue_numbers: Mapping[str, str] = field(default_factory=dict)
    agent_endpoints: Mapping[str, str] = field(default_factory=dict)


TERMINAL = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
STATUSES = frozenset({"queued", "initiated", "ringing", "in-progress", "answered", *TERMINAL})
_CAUSE = {
    "busy": EndCause.BUSY,
    "no-answer": EndCause.NO_ANSWER,
    "failed": EndCause.FAILED,
    "canceled": EndCause.CANCELED,
}


# ---- form bodies ----------------------------------------------------------------------

def parse_form(body: bytes) -> dict[str, str]:
    """Decode an `application/x-www-form-urlencoded` body strictly.

    Hand-rolled rather than `urllib.parse.parse_qsl`: most Twilio fields need no
    unquoting, and skipping it makes parsing about twice as fast.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("body is not UTF-8") from None
    out: dict[str, str] = {}
    if not text:
        return out
    for pair in text.split("&"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep:
            raise WireError(f"body is not form-encoded: field {pair[:40]!r} has no '='")
        if "%" in key or "+" in key:
            key = unquote_plus(key)
        if "%" in value or "+" in value:
            value = unquote_plus(value)
        out[key] = value
    return out


def require(params: Mapping[str, str], *names: str) -> None:
    missing = [n for n in names if not params.get(n)]
    if missing:
        raise WireError(f"missing field {', '.join(missing)}")


@lru_cache(maxsize=4096)
def to_e164(raw: str | None, region: str) -> str | None:
    """E.164 for phone numbers; `client:alice` / `sip:..` endpoints are kept as they are."""
    if not raw:
        return None
    if raw.startswith(("client:", "sip:", "queue:")):
        return raw
    return phone.normalize(raw, region)


def parse_timestamp(value: str | None) -> datetime | None:
    """Twilio's `Timestamp` (RFC 2822, e.g. `Mon, 16 Aug 2010 03:45:01 +0000`)."""
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        raise WireError(f"invalid Timestamp {value!r}") from None


def occurred_at(params: Mapping[str, str], received: datetime) -> datetime:
    """When the fact happened: Twilio's whole-second Timestamp, refined by our receive time.

    Twilio stamps callbacks to the second; events we derive from REST answers carry
    microseconds. When the receive time falls inside the stamped second it is the
    better estimate (keeps callback and command events in their real order); a late
    (retried) delivery keeps the provider's stamp.
    """
    ts = parse_timestamp(params.get("Timestamp"))
    if ts is None:
        return received
    if ts <= received < ts + timedelta(seconds=1):
        return received
    return ts


def seq_of(params: Mapping[str, str]) -> int:
    raw = params.get("SequenceNumber") or "0"
    try:
        return int(raw)
    except ValueError:
        raise WireError(f"invalid SequenceNumber {raw!r}") from None


def dedupe_keys(params: Mapping[str, str], headers: Mapping[str, str], path: str) -> list[str]:
    """Keys a retried delivery repeats: Twilio's idempotency token and the callback's own
    identity (CallSid+SequenceNumber, RecordingSid+status, conference sequence)."""
    keys = []
    token = headers.get("I-Twilio-Idempotency-Token")
    if token:
        keys.append("t:" + token)
    sid = params.get("CallSid")
    if params.get("RecordingSid"):
        keys.append(f"r:{params['RecordingSid']}:{params.get('RecordingStatus', '')}")
    elif params.get("StatusCallbackEvent") and params.get("SequenceNumber"):
        keys.append(f"c:{params.get('ConferenceSid', '')}:{params['SequenceNumber']}")
    elif sid and params.get("SequenceNumber"):
        keys.append(f"s:{path}:{sid}:{params['SequenceNumber']}")
    return keys


# ---- mapping helpers ------------------------------------------------------------------

def agent_for(endpoint: str | None, ctx: WireContext) -> str | None:
    """`client:alice` -> the agent configured for that endpoint (else the client name)."""
    if not endpoint:
        return None
    if endpoint in ctx.agent_endpoints:
        return ctx.agent_endpoints[endpoint]
    if endpoint.startswith("client:"):
        name = endpoint.removeprefix("client:")
        return ctx.agent_endpoints.get(name, name)
    return None


def queue_for(number: str | None, ctx: WireContext) -> str | None:
    if not number:
        return None
    return ctx.queue_numbers.get(number)


def _event(ctx: WireContext, sid: str, kind: EventKind, at: datetime, *id_parts: object,
           call_id: str | None = None, **kw: Any) -> CallEvent:
    return CallEvent(
        event_id=make_event_id(ctx.provider, sid, kind.value, *id_parts),
        provider=ctx.provider,
        provider_call_id=sid,
        call_id=call_id or make_call_id(ctx.tenant, ctx.provider, sid),
        kind=kind,
        occurred_at=at,
        tenant=ctx.tenant,
        **kw,
    )


def ended_event(ctx: WireContext, sid: str, at: datetime, cause: str, seq: int = 0,
                call_id: str | None = None, **data: Any) -> CallEvent:
    """The one `ended` of a call: its id does not depend on who reported it."""
    return CallEvent(
        event_id=make_event_id(ctx.provider, sid, "ended"),
        provider=ctx.provider, provider_call_id=sid,
        call_id=call_id or make_call_id(ctx.tenant, ctx.provider, sid),
        kind=EventKind.ENDED, occurred_at=at, seq=seq, tenant=ctx.tenant,
        data={"cause": str(cause), **data},
    )


# ---- voice webhook (a new inbound call) -------------------------------------------------

def inbound_events(params: Mapping[str, str], query: Mapping[str, str], ctx: WireContext,
                   received: datetime) -> list[CallEvent]:
    """The voice webhook of an inbound call: created (+ queued when the number is a queue)."""
    require(params, "CallSid", "From", "To")
    sid = params["CallSid"]
    at = occurred_at(params, received)
    frm = to_e164(params["From"], ctx.region)
    to = to_e164(params["To"], ctx.region)
    queue = queue_for(to, ctx) or queue_for(params["To"], ctx)
    direction = Direction.INBOUND if params.get("Direction", "inbound") == "inbound" else Direction.OUTBOUND
    out = [_event(ctx, sid, EventKind.CREATED, at, direction=direction, from_number=frm, to_number=to,
                  queue=queue, data={"account_sid": params.get("AccountSid", "")})]
    if queue:
        out.append(_event(ctx, sid, EventKind.QUEUED, at, queue=queue, direction=direction))
    return out


def queue_of_voice(params: Mapping[str, str], ctx: WireContext) -> str | None:
    return queue_for(to_e164(params.get("To"), ctx.region), ctx) or queue_for(params.get("To"), ctx)


# ---- status callbacks -------------------------------------------------------------------

def status_events(params: Mapping[str, str], query: Mapping[str, str], ctx: WireContext,
                  received: datetime, *, answered: bool = False, transferred: bool = False,
                  voicemail: bool = False) -> list[CallEvent]:
    """Map one status callback to events.

    `answered` / `transferred` / `voicemail` are what the adapter knows of the parent
    call (whether an agent took it, whether we transferred it away or dropped a
    voicemail into it): they decide the end cause.
    """
    require(params, "CallSid", "CallStatus")
    status = params["CallStatus"]
    if status not in STATUSES:
        raise WireError(f"unknown CallStatus {status!r}")
    role = query.get("role", "")
    at = occurred_at(params, received)
    seq = seq_of(params)
    if role == "agent":
        return _agent_leg(params, query, ctx, at, status)
    if role == "originate":
        return _originate_leg(params, query, ctx, at, status, seq)
    if role == "customer":
        return _customer_leg(params, query, ctx, at, status)
    sid = params["CallSid"]
    if status not in TERMINAL:
        return []  # the inbound call's own progress is reported by the voice webhook and agent legs
    if status == "completed":
        if voicemail:
            cause = EndCause.VOICEMAIL
        elif transferred:
            cause = EndCause.TRANSFERRED
        elif answered:
            cause = EndCause.NORMAL
        else:
            cause = EndCause.CALLER_HANGUP
    else:
        cause = _CAUSE[status]
    return [ended_event(ctx, sid, at, cause, seq, duration_s=_int(params.get("CallDuration")),
                        status=status)]


def _agent_leg(params: Mapping[str, str], query: Mapping[str, str], ctx: WireContext, at: datetime,
               status: str) -> list[CallEvent]:
    parent = query.get("parent") or params.get("ParentCallSid")
    if not parent:
        raise WireError("agent leg callback without parent call")
    leg = params["CallSid"]
    agent = query.get("agent") or agent_for(params.get("To"), ctx)
    data = {"leg": leg}
    if status == "ringing":
        return [_event(ctx, parent, EventKind.RINGING, at, leg, agent=agent, data=data)]
    if status in ("in-progress", "answered"):
        return [_event(ctx, parent, EventKind.ANSWERED, at, agent=agent, data=data)]
    if status in ("no-answer", "busy", "failed", "canceled"):
        return [_event(ctx, parent, EventKind.NO_ANSWER, at, leg, agent=agent,
                       data={**data, "reason": status})]
    if status == "completed":
        # `completed` means answered and then hung up. When its `in-progress` is late or
        # lost, this is the proof of the answer (same event id: the first report wins);
        # the parent ends the call.
        return [_event(ctx, parent, EventKind.ANSWERED, _answered_at(params, at), agent=agent, data=data)]
    return []  # initiated/queued: nothing the call model needs


def _originate_leg(params: Mapping[str, str], query: Mapping[str, str], ctx: WireContext, at: datetime,
                   status: str, seq: int) -> list[CallEvent]:
    sid = params["CallSid"]
    cid = query.get("cid") or None
    agent = query.get("agent") or agent_for(params.get("To"), ctx)
    to = to_e164(query.get("to"), ctx.region)
    kw: dict[str, Any] = {"call_id": cid, "seq": seq}
    if status in ("initiated", "queued"):
        return [_event(ctx, sid, EventKind.CREATED, at, direction=Direction.OUTBOUND, agent=agent,
                       to_number=to, from_number=to_e164(params.get("From"), ctx.region), **kw)]
    if status == "ringing":
        return [_event(ctx, sid, EventKind.RINGING, at, agent=agent, **kw)]
    if status in ("in-progress", "answered"):
        return []  # the agent picked up; the call is answered when the customer does
    cause = EndCause.NORMAL if status == "completed" else _CAUSE[status]
    return [ended_event(ctx, sid, at, cause, seq, call_id=cid, duration_s=_int(params.get("CallDuration")),
                        status=status)]


def _customer_leg(params: Mapping[str, str], query: Mapping[str, str], ctx: WireContext, at: datetime,
                  status: str) -> list[CallEvent]:
    parent = query.get("parent") or params.get("ParentCallSid")
    if not parent:
        raise WireError("customer leg callback without parent call")
    cid = query.get("cid") or None
    agent = query.get("agent") or None
    if status in ("in-progress", "answered", "completed"):
        # a `completed` leg was answered: it proves the answer if `in-progress` is late or lost
        when = _answered_at(params, at) if status == "completed" else at
        return [_event(ctx, parent, EventKind.ANSWERED, when, call_id=cid, agent=agent,
                       data={"leg": params["CallSid"]})]
    if status in ("busy", "no-answer", "failed", "canceled"):
        return [ended_event(ctx, parent, at, _CAUSE[status], call_id=cid, status=status)]
    return []


def _answered_at(params: Mapping[str, str], ended_at: datetime) -> datetime:
    """When a completed leg was answered: its end minus its `CallDuration` (seconds of talk)."""
    return ended_at - timedelta(seconds=_int(params.get("CallDuration")))


def _int(raw: str | None) -> int:
    try:
        return int(raw or 0)
    except ValueError:
        return 0


# ---- recording callbacks ----------------------------------------------------------------

def recording_events(params: Mapping[str, str], query: Mapping[str, str], ctx: WireContext,
                     received: datetime) -> list[CallEvent]:
    require(params, "CallSid", "RecordingSid", "RecordingStatus")
    sid = query.get("parent") or params["CallSid"]
    rsid = params["RecordingSid"]
    status = params["RecordingStatus"]
    at = occurred_at(params, received)
    cid = query.get("cid") or None
    if status == "in-progress":
        return [_event(ctx, sid, EventKind.RECORDING_STARTED, at, rsid, call_id=cid,
                       data={"recording": rsid})]
    if status == "completed":
        require(params, "RecordingUrl")
        url = params["RecordingUrl"]
        channels = _int(params.get("RecordingChannels")) or 1
        ready: dict[str, Any] = {
            "recording": rsid, "url": url + ".wav",
            "duration_s": _int(params.get("RecordingDuration")),
            "channels": channels,
        }
        # a dual recording of a call carries that call's own party on its first channel:
        # the customer for an inbound call, the agent for a click-to-call (whose call is the
        # agent's leg); we said which when we started it (`first`)
        first = query.get("first")
        if channels == 2 and first in ("agent", "customer"):
            ready["channel_roles"] = [first, "customer" if first == "agent" else "agent"]
        return [
            _event(ctx, sid, EventKind.RECORDING_STOPPED, at, rsid, call_id=cid, data={"recording": rsid}),
            _event(ctx, sid, EventKind.RECORDING_READY, at, rsid, call_id=cid, data=ready),
        ]
    if status in ("absent", "failed"):
        return [_event(ctx, sid, EventKind.RECORDING_STOPPED, at, rsid, call_id=cid,
                       data={"recording": rsid, "reason": status})]
    raise WireError(f"unknown RecordingStatus {status!r}")


def recording_command_event(ctx: WireContext, sid: str, rsid: str, status: str, at: datetime,
                            n: int = 0, call_id: str | None = None) -> CallEvent:
    """The event a recording REST answer proves (status in-progress/paused/stopped)."""
    if status == "in-progress" and n == 0:
        return _event(ctx, sid, EventKind.RECORDING_STARTED, at, rsid, call_id=call_id,
                      data={"recording": rsid})
    kind = {"paused": EventKind.RECORDING_PAUSED, "in-progress": EventKind.RECORDING_RESUMED,
            "stopped": EventKind.RECORDING_STOPPED}.get(status)
    if kind is None:
        raise WireError(f"unexpected recording status {status!r}")
    parts: tuple[object, ...] = (rsid,) if kind is EventKind.RECORDING_STOPPED else (rsid, n)
    return _event(ctx, sid, kind, at, *parts, call_id=call_id, data={"recording": rsid})


# ---- conference callbacks ---------------------------------------------------------------

def conference_events(params: Mapping[str, str], query: Mapping[str, str], ctx: WireContext,
                      received: datetime) -> list[CallEvent]:
    """Hold/unhold of the customer, announcements played, supervisor joins/leaves (by label)."""
    require(params, "StatusCallbackEvent")
    ev = params["StatusCallbackEvent"]
    sid = query.get("parent") or params.get("FriendlyName")
    if not sid:
        raise WireError("missing field FriendlyName")
    at = occurred_at(params, received)
    seq = seq_of(params)
    label = params.get("ParticipantLabel", "")
    part = params.get("CallSid", "")
    if ev == "participant-hold" and label == "customer":
        return [_event(ctx, sid, EventKind.HELD, at, seq, seq=seq)]
    if ev == "participant-unhold" and label == "customer":
        return [_event(ctx, sid, EventKind.RESUMED, at, seq, seq=seq)]
    if ev in ("announcement-end", "announcement-fail"):
        data = {"failed": True} if ev == "announcement-fail" else {}
        return [_event(ctx, sid, EventKind.PLAYBACK_FINISHED, at, seq, seq=seq, data=data)]
    if label.startswith("monitor:") and ev in ("participant-join", "participant-leave"):
        _, mode, supervisor = [*label.split(":", 2), "", ""][:3]
        kind = EventKind.MONITOR_STARTED if ev == "participant-join" else EventKind.MONITOR_STOPPED
        return [_event(ctx, sid, kind, at, part, agent=None,
                       data={"mode": mode, "supervisor": supervisor, "session_id": part})]
    return []


# ---- TwiML and REST forms ---------------------------------------------------------------

def _attrs(**kw: object) -> str:
    return "".join(f" {k}={quoteattr(str(v))}" for k, v in kw.items() if v is not None)


def twiml(*verbs: str) -> str:
    return '<?xml version="1.0" encoding="UTF-8"?><Response>' + "".join(verbs) + "</Response>"


def enqueue_twiml(queue: str, wait_url: str | None = None) -> str:
    return twiml(f"<Enqueue{_attrs(waitUrl=wait_url)}>{escape(queue)}</Enqueue>")


def reject_twiml() -> str:
    return twiml('<Reject reason="busy"/>')


def conference_twiml(name: str, status_url: str, hold_music: str | None = None,
                     label: str = "customer") -> str:
    """Put the customer into a conference named after its CallSid (monitoring needs one)."""
    return twiml("<Dial><Conference" + _attrs(
        participantLabel=label, startConferenceOnEnter="true", endConferenceOnExit="true", beep="false",
        waitUrl=hold_music, statusCallback=status_url,
        statusCallbackEvent="start end join leave hold announcement",
    ) + f">{escape(name)}</Conference></Dial>")


def dial_twiml(target: str, caller_id: str | None = None, status_url: str | None = None,
               timeout_s: int | None = None) -> str:
    """`<Dial>` a number (E.164) or a Twilio client/SIP endpoint."""
    cb = _attrs(statusCallback=status_url,
                statusCallbackEvent="initiated ringing answered completed" if status_url else None)
    if target.startswith("client:"):
        noun = f"<Client{cb}>{escape(target.removeprefix('client:'))}</Client>"
    elif target.startswith("sip:"):
        noun = f"<Sip{cb}>{escape(target)}</Sip>"
    else:
        noun = f"<Number{cb}>{escape(target)}</Number>"
    return twiml(f"<Dial{_attrs(callerId=caller_id, timeout=timeout_s)}>{noun}</Dial>")


def play_hangup_twiml(media: str) -> str:
    return twiml(f"<Play>{escape(media)}</Play><Hangup/>")


def call_status_form(status: str) -> dict[str, str]:
    return {"Status": status}


def participant_form(*, frm: str, to: str, label: str, status_url: str | None = None,
                     timeout_s: float | None = None, coach: str | None = None, muted: bool = False,
                     end_on_exit: bool = False) -> dict[str, str]:
    """Conference participant create (agent or supervisor).

    Supervisor modes: whisper = `Coaching` + `CallSidToCoach` (the agent's leg hears
    the supervisor), listen = `Muted`, barge = neither.
    """
    form = {"From": frm, "To": to, "Label": label, "EarlyMedia": "false", "Beep": "false"}
    if status_url:
        form["StatusCallback"] = status_url
        form["StatusCallbackEvent"] = "initiated ringing answered completed"
    if timeout_s is not None:
        form["Timeout"] = str(int(timeout_s))
    if coach:
        form["Coaching"] = "true"
        form["CallSidToCoach"] = coach
    if muted:
        form["Muted"] = "true"
    if end_on_exit:
        form["EndConferenceOnExit"] = "true"
    return form


def monitor_form(mode: str, coach: str | None) -> dict[str, str]:
    """Participant update switching a supervisor between listen / whisper / barge."""
    if mode == "whisper":
        return {"Coaching": "true", "CallSidToCoach": coach or "", "Muted": "false"}
    if mode == "listen":
        return {"Coaching": "false", "Muted": "true"}
    return {"Coaching": "false", "Muted": "false"}


def error_message(status: int, body: Any) -> tuple[int | None, str]:
    """(Twilio error code, message) from a REST error body `{"code", "message", ...}`."""
    if isinstance(body, dict):
        code = body.get("code")
        return (int(code) if isinstance(code, int | str) and str(code).isdigit() else None,
                str(body.get("message") or f"HTTP {status}"))
    return None, f"HTTP {status}"
