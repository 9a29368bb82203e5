"""SIP wire format for the pyVoIP line: pure parsing, building and audio conversion.

pyVoIP parses SIP for itself, but it drops what we need (486 Busy, CANCEL, provisional
responses) and its parser trips on some headers, so the adapter sees every raw message
first and reads it with `parse()` here. Also here: the few messages pyVoIP 1.6.8
cannot build (ACK for a non-2xx final response, 487 after a CANCEL, CANCEL itself),
the mapping of SIP facts to `CallEvent`s, and the audio conversions pyVoIP needs
(it reads and writes 8-bit *unsigned linear* audio, not mu-law).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import numpy as np

from cti import phone
from cti.model import CallEvent, Direction, EndCause, EventKind, make_call_id, make_event_id


class SipParseError(ValueError):
    """A datagram that is not a SIP message we can read (the message says why)."""


_COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact", "l": "content-length",
            "c": "content-type"}
_URI_USER = re.compile(r"<?\s*(?:sips?|tel):([^@;>]*)(?:@([^;>]*))?", re.IGNORECASE)
_TAG = re.compile(r";\s*tag=([^;\s]+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class SipMessage:
    """The parts of a SIP message the adapter acts on."""

    method: str | None          # request method, or None for a response
    status: int | None          # response code, or None for a request
    uri: str | None
    headers: Mapping[str, list[str]] = field(default_factory=dict)  # lower-case names, in order
    body: str = ""

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def call_id(self) -> str:
        value = self.header("call-id")
        if not value:
            raise SipParseError("SIP message without Call-ID")
        return value.strip()

    @property
    def cseq(self) -> tuple[int, str]:
        raw = self.header("cseq") or ""
        parts = raw.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise SipParseError(f"invalid CSeq {raw!r}")
        return int(parts[0]), parts[1].upper()

    @property
    def from_user(self) -> str | None:
        return uri_user(self.header("from"))

    @property
    def to_user(self) -> str | None:
        return uri_user(self.header("to"))

    @property
    def to_tag(self) -> str | None:
        m = _TAG.search(self.header("to") or "")
        return m.group(1) if m else None


def parse(raw: bytes) -> SipMessage:
    """Parse one SIP datagram (request or response)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    head, _, body = text.partition("\r\n\r\n")
    if not _:
        head, _, body = text.partition("\n\n")
    lines = [ln for ln in re.split(r"\r?\n", head)]
    if not lines or not lines[0].strip():
        raise SipParseError("empty SIP message")
    start = lines[0].split(" ", 2)
    if start[0] == "SIP/2.0":
        if len(start) < 2 or not start[1].isdigit():
            raise SipParseError(f"invalid status line {lines[0]!r}")
        method, status, uri = None, int(start[1]), None
    elif len(start) == 3 and start[2].strip() == "SIP/2.0":
        method, status, uri = start[0].upper(), None, start[1]
    else:
        raise SipParseError(f"not a SIP/2.0 start line: {lines[0][:60]!r}")
    headers: dict[str, list[str]] = {}
    last: str | None = None
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and last:  # folded header continues the previous one
            headers[last][-1] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise SipParseError(f"invalid header line {line[:60]!r}")
        key = name.strip().lower()
        key = _COMPACT.get(key, key)
        headers.setdefault(key, []).append(value.strip())
        last = key
    return SipMessage(method=method, status=status, uri=uri, headers=headers, body=body)


def uri_user(value: str | None) -> str | None:
    """User part of a name-addr / addr-spec (`"Bob" <sip:+3361@host>;tag=x` -> `+3361`).

    Tolerates pyVoIP's `<sip:1001@:5060>` (host missing).
    """
    if not value:
        return None
    m = _URI_USER.search(value)
    if not m:
        return None
    user = m.group(1).strip()
    return user or None


@lru_cache(maxsize=4096)
def to_e164(raw: str | None, region: str) -> str | None:
    """E.164 for numbers; extensions (`1001`) and names are kept as they are."""
    return phone.normalize(raw, region)


# ---- messages pyVoIP cannot build ----------------------------------------------------

def _copy(msg: SipMessage, *names: str) -> str:
    out = ""
    for name in names:
        for value in msg.headers.get(name.lower(), []):
            out += f"{name}: {value}\r\n"
    return out


def ack_for_failure(response: SipMessage, request_uri: str) -> str:
    """ACK for a non-2xx final response (same transaction: top Via, To with its tag)."""
    seq, _ = response.cseq
    via = response.headers.get("via", [""])[0]
    return (f"ACK {request_uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
            + _copy(response, "From", "To", "Call-ID")
            + f"CSeq: {seq} ACK\r\nContent-Length: 0\r\n\r\n")


def ack_for_2xx(response: SipMessage, branch: str) -> str:
    """ACK for a 2xx to our INVITE: to the callee's Contact, through the Record-Route set.

    (pyVoIP sends its ACK to the To URI without Route headers; a proxy drops it.)
    """
    seq, _ = response.cseq
    contact = response.header("contact") or ""
    m = re.search(r"<([^>]+)>", contact)
    target = m.group(1) if m else contact.split(";")[0].strip()
    if not target:
        raise SipParseError("2xx without Contact")
    via = response.headers.get("via", [""])[0]
    via = re.sub(r";\s*branch=[^;]+", f";branch={branch}", via) if "branch=" in via else f"{via};branch={branch}"
    routes = [r.strip() for rr in reversed(response.headers.get("record-route", []))
              for r in reversed(rr.split(","))]
    out = f"ACK {target} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
    out += "".join(f"Route: {r}\r\n" for r in routes)
    return out + _copy(response, "From", "To", "Call-ID") + f"CSeq: {seq} ACK\r\nContent-Length: 0\r\n\r\n"


def response_to(invite: SipMessage, code: int, reason: str, to_tag: str) -> str:
    """A final response to an INVITE, in its transaction (all Vias, From, To + our tag)."""
    seq, _ = invite.cseq
    to = invite.header("to") or ""
    if ";tag=" not in to:
        to += f";tag={to_tag}"
    return (f"SIP/2.0 {code} {reason}\r\n" + _copy(invite, "Via", "From")
            + f"To: {to}\r\n" + _copy(invite, "Call-ID") + f"CSeq: {seq} INVITE\r\nContent-Length: 0\r\n\r\n")


def request_terminated(invite: SipMessage, to_tag: str) -> str:
    """487 Request Terminated for an INVITE the caller cancelled (pyVoIP only 200s the CANCEL)."""
    return response_to(invite, 487, "Request Terminated", to_tag)


def not_acceptable(invite: SipMessage, to_tag: str) -> str:
    """488 for an offer without G.711 (pyVoIP would take the call and have no codec)."""
    return response_to(invite, 488, "Not Acceptable Here", to_tag)


_G711 = {"0": "PCMU", "8": "PCMA"}


def offers_g711(sdp: str) -> bool:
    """Whether an SDP offer has an audio stream pyVoIP can carry (PCMU or PCMA)."""
    formats: list[str] = []
    names: dict[str, str] = {}
    for line in sdp.splitlines():
        line = line.strip()
        if line.startswith("m=audio "):
            formats += line.split()[3:]
        elif line.startswith("a=rtpmap:"):
            pt, _, rest = line[len("a=rtpmap:"):].partition(" ")
            names[pt] = rest.split("/")[0].upper()
    return any(_G711.get(f) or names.get(f) in ("PCMU", "PCMA") for f in formats)


def cancel_for(invite: SipMessage) -> str:
    """CANCEL of our own pending INVITE (same Request-URI, top Via, From, To, Call-ID, CSeq number)."""
    seq, _ = invite.cseq
    via = invite.headers.get("via", [""])[0]
    return (f"CANCEL {invite.uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
            + _copy(invite, "From", "To", "Call-ID") + f"CSeq: {seq} CANCEL\r\nContent-Length: 0\r\n\r\n")


# ---- facts -> events -------------------------------------------------------------------

def end_cause(status: int) -> EndCause:
    """End cause of an outbound call from the final response that rejected it."""
    if status in (486, 600):
        return EndCause.BUSY
    if status in (408, 480):
        return EndCause.NO_ANSWER
    if status == 487:
        return EndCause.CANCELED
    if status == 603:
        return EndCause.NO_ANSWER  # declined by the callee
    return EndCause.FAILED


@dataclass(frozen=True, slots=True)
class LineContext:
    provider: str
    tenant: str = "default"
    region: str = "FR"
    agent: str | None = None
    queue_numbers: Mapping[str, str] = field(default_factory=dict)


def event(ctx: LineContext, sip_call_id: str, kind: EventKind, at: datetime, *id_parts: object,
          call_id: str | None = None, **kw: Any) -> CallEvent:
    return CallEvent(
        event_id=make_event_id(ctx.provider, sip_call_id, kind.value, *id_parts),
        provider=ctx.provider, provider_call_id=sip_call_id,
        call_id=call_id or make_call_id(ctx.tenant, ctx.provider, sip_call_id),
        kind=kind, occurred_at=at, tenant=ctx.tenant, **kw,
    )


def ended(ctx: LineContext, sip_call_id: str, at: datetime, cause: str, call_id: str | None = None,
          **data: Any) -> CallEvent:
    """The one `ended` of a call: same id whichever side ended it."""
    return event(ctx, sip_call_id, EventKind.ENDED, at, call_id=call_id, data={"cause": str(cause), **data})


def inbound_events(invite: SipMessage, ctx: LineContext, at: datetime) -> list[CallEvent]:
    """An INVITE to the line: created + queued (dialled number is a queue) + ringing(agent)."""
    sid = invite.call_id
    frm = to_e164(invite.from_user, ctx.region)
    to = to_e164(invite.to_user, ctx.region)
    queue = ctx.queue_numbers.get(to or "") or ctx.queue_numbers.get(invite.to_user or "")
    out = [event(ctx, sid, EventKind.CREATED, at, direction=Direction.INBOUND, from_number=frm,
                 to_number=to, queue=queue)]
    if queue:
        out.append(event(ctx, sid, EventKind.QUEUED, at, queue=queue))
    out.append(event(ctx, sid, EventKind.RINGING, at, ctx.agent, agent=ctx.agent))
    return out


def cancel_events(sid: str, ctx: LineContext, at: datetime, *, ringing: bool) -> list[CallEvent]:
    """The caller gave up before the line answered."""
    out = []
    if ringing:
        out.append(event(ctx, sid, EventKind.NO_ANSWER, at, ctx.agent, agent=ctx.agent,
                         data={"reason": "caller_hangup"}))
    out.append(ended(ctx, sid, at, EndCause.CALLER_HANGUP))
    return out


# ---- audio -----------------------------------------------------------------------------

def u8_to_pcm16(data: bytes) -> bytes:
    """pyVoIP's 8-bit unsigned linear -> 16-bit signed little-endian PCM (what ASR wants)."""
    a = np.frombuffer(data, dtype=np.uint8).astype(np.int16)
    return ((a - 128) << 8).astype("<i2").tobytes()


def pcm16_to_u8(samples: np.ndarray) -> bytes:
    """16-bit signed samples -> the 8-bit unsigned linear pyVoIP's write_audio expects."""
    s = np.asarray(samples, dtype=np.int16).astype(np.int32)
    return ((s >> 8) + 128).astype(np.uint8).tobytes()


def resample(samples: np.ndarray, rate: int, target: int = 8000) -> np.ndarray:
    if rate == target or len(samples) == 0:
        return samples
    n = int(len(samples) * target / rate)
    x = np.linspace(0, len(samples) - 1, n)
    return np.interp(x, np.arange(len(samples)), samples).astype(np.int16)
