"""SIP wire format for the pyVoIP line: pure parsing, building and audio conversion.

pyVoIP parses SIP for itself, but it drops what we need (486 Busy, CANCEL, provisional
responses) and its parser trips on some headers, so the adapter sees every raw message
first and reads it with `parse()` here. Also here: the few messages pyVoIP 1.6.8
cannot build (ACK for a non-2xx final response, 487 after a CANCEL, CANCEL itself),
the mapping of SIP facts to `CallEvent`s, and the audio conversions pyVoIP needs
(it reads and writes 8-bit *unsigned linear* audio, not mu-law).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

import numpy as np

from cti import phone
from cti.model import CallEvent, Direction, EndCause, EventKind, make_call_id, make_event_id


class SipParseError(ValueError):
    """A datagram that is not a SIP message we can read (the message says why)."""


# RFC 3261 7.3.3 (and the RFCs that added a letter): a header name may be sent as one letter
_COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact", "l": "content-length",
            "c": "content-type", "e": "content-encoding", "k": "supported", "s": "subject",
            "o": "event", "u": "allow-events", "r": "refer-to", "b": "referred-by", "x": "session-expires"}
_URI_USER = re.compile(r"<?\s*(?:sips?|tel):([^@;>]*)(?:@([^;>]*))?", re.IGNORECASE)
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')  # RFC 3261 25.1 quoted-string, with \" escapes
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
    text = _decode(raw)
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


# the spelling pyVoIP's parser looks header names up by (it is case-sensitive)
_SPELLING = {"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq",
             "contact": "Contact", "content-length": "Content-Length", "content-type": "Content-Type",
             "www-authenticate": "WWW-Authenticate", "proxy-authenticate": "Proxy-Authenticate",
             "authorization": "Authorization", "allow": "Allow", "supported": "Supported",
             "record-route": "Record-Route", "route": "Route", "max-forwards": "Max-Forwards",
             "expires": "Expires"}


def canonical(raw: bytes) -> bytes:
    """The same message spelled the one way pyVoIP 1.6.8's parser reads.

    pyVoIP splits lines on CRLF and each header on ": ", looks headers up by their full
    name in one case, reads one Via per line, finds the To tag by ";tag=" and the URI by
    "sip:", and parses the body as SDP. RFC 3261 allows more (7.3.1: any case, LWS around
    the colon, folded lines, comma-separated values; 7.3.3: compact names; 19.1.4: a
    scheme in any case; 7.4: multipart bodies) and real devices send it; a message pyVoIP
    cannot parse is dropped before anyone sees it (an INVITE never rings, a BYE never ends
    the call). Messages already in that spelling come back unchanged but for whitespace.
    """
    text = _decode(raw)
    head, body = _split_head(text)
    lines = re.split(r"\r?\n", head)
    out = [lines[0].strip()]
    for name, value in _header_lines(lines[1:]):
        key = _COMPACT.get(name.lower(), name.lower())
        spelled = _SPELLING.get(key, name)
        if key == "via":
            out += [f"Via: {_tidy_via(v)}" for v in _split_commas(value)]
            continue
        if key in ("from", "to"):
            value = _tidy_name_addr(value)
        out.append(f"{spelled}: {value}")
    body, content_type = _sdp_part(body, _header_value(out, "Content-Type"))
    body = re.sub(r"\r?\n", "\r\n", body)
    out = [ln for ln in out if not ln.startswith(("Content-Length:", "Content-Type:"))]
    if content_type:
        out.append(f"Content-Type: {content_type}")
    out.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(out) + "\r\n\r\n" + body).encode()  # pyVoIP decodes UTF-8 only


def _decode(raw: bytes) -> str:
    """UTF-8 as RFC 3261 says; old gateways send Latin-1 display names."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _split_head(text: str) -> tuple[str, str]:
    """Head and body, at the first empty line (CRLF or bare LF)."""
    m = re.search(r"\r?\n\r?\n", text)
    return (text[: m.start()], text[m.end():]) if m else (text, "")


def _header_lines(lines: list[str]) -> list[tuple[str, str]]:
    """(name, value) per header, folded lines joined (RFC 3261 7.3.1); no-colon lines dropped."""
    out: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t") and out:
            out[-1] = (out[-1][0], f"{out[-1][1]} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if sep and name.strip():
            out.append((name.strip(), value.strip()))
    return out


def _split_commas(value: str) -> list[str]:
    msg = SipMessage(method=None, status=None, uri=None, headers={"x": [value]})
    return header_values(msg, "x")


def _tidy_via(via: str) -> str:
    """`SIP/2.0/UDP host:port ; branch=x` -> `SIP/2.0/UDP host:port;branch=x`."""
    via = re.sub(r"\s*;\s*", ";", via.strip())
    via = re.sub(r"\s*=\s*", "=", via)
    return re.sub(r"\s*/\s*", "/", re.sub(r"\s+", " ", via))


def _tidy_name_addr(value: str) -> str:
    """`<SIP:x@h> ; TAG=1` -> `<sip:x@h>;tag=1` (scheme and parameter names are case-insensitive)."""
    value = re.sub(r"\s*;\s*tag\s*=\s*", ";tag=", value, flags=re.IGNORECASE)
    scheme = r"(<\s*)(sips?|tel)\s*:" if "<" in value else r"^()(sips?|tel)\s*:"
    return re.sub(scheme, lambda m: m.group(1) + m.group(2).lower() + ":", value, count=1,
                  flags=re.IGNORECASE)


def _header_value(lines: list[str], name: str) -> str:
    prefix = name + ":"
    return next((ln[len(prefix):].strip() for ln in lines if ln.startswith(prefix)), "")


def _sdp_part(body: str, content_type: str) -> tuple[str, str]:
    """The SDP of a multipart body (a SIP-I trunk sends SDP + ISUP, RFC 3204), which pyVoIP
    would read as SDP lines and fail on; other bodies are kept with their type."""
    m = re.search(r'boundary\s*=\s*"?([^";]+)"?', content_type, re.IGNORECASE)
    if not content_type.lower().startswith("multipart/") or m is None:
        return body, content_type
    for part in body.split("--" + m.group(1).strip()):
        head, sdp = _split_head(part.lstrip("\r\n"))
        if re.search(r"content-type\s*:\s*application/sdp", head, re.IGNORECASE):
            return sdp.rstrip("\r\n") + "\r\n", "application/sdp"
    return body, content_type


def uri_user(value: str | None) -> str | None:
    """User part of a name-addr / addr-spec (`"Bob" <sip:+3361@host>;tag=x` -> `+3361`).

    Tolerates pyVoIP's `<sip:1001@:5060>` (host missing).
    """
    if not value:
        return None
    value = _QUOTED.sub("", value)  # a display name may itself read like a URI ("sip:x" <sip:1001@h>)
    bracket = re.search(r"<([^>]*)>", value)
    m = _URI_USER.search(bracket.group(1) if bracket else value)
    if not m:
        return None
    user = unquote(m.group(1).strip())  # RFC 3261 19.1.2: `%2B33...` is `+33...`
    return user or None


def header_values(msg: SipMessage, name: str) -> list[str]:
    """Every value of a header: its lines, each split on the commas between values
    (RFC 3261 7.3.1), not those inside quotes or <>."""
    out: list[str] = []
    for line in msg.headers.get(name.lower(), []):
        depth, quoted, start, i = 0, False, 0, 0
        while i < len(line):
            ch = line[i]
            if quoted and ch == "\\":
                i += 1  # an escaped character inside a quoted string
            elif ch == '"':
                quoted = not quoted
            elif not quoted and ch in "<>":
                depth += 1 if ch == "<" else -1
            elif not quoted and depth <= 0 and ch == ",":
                out.append(line[start:i].strip())
                start = i + 1
            i += 1
        out.append(line[start:].strip())
    return [v for v in out if v]


def caller_user(invite: SipMessage) -> str | None:
    """Who is calling, as the network asserts it.

    P-Asserted-Identity (RFC 3325) is the identity the caller's network vouches for; a
    trunk often puts it there and an anonymous or a routing address in From (Privacy: id,
    RFC 3323). Remote-Party-ID (its predecessor, still sent by older PBXs and gateways)
    comes next, then From. A tel: identity is preferred to a sip: one that is no number.
    """
    asserted = [uri_user(v) for v in header_values(invite, "p-asserted-identity")]
    asserted = [u for u in asserted if u]
    numbers = [u for u in asserted if _NUMBER.fullmatch(u)]
    if numbers or asserted:
        return (numbers or asserted)[0]
    for value in header_values(invite, "remote-party-id"):
        party = re.search(r";\s*party\s*=\s*([a-z]+)", _QUOTED.sub("", value), re.IGNORECASE)
        if party is None or party.group(1).lower() == "calling":
            user = uri_user(value)
            if user:
                return user
    return invite.from_user


_NUMBER = re.compile(r"\+?[0-9][0-9().-]*")


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


def response_to(invite: SipMessage, code: int, reason: str, to_tag: str, extra: str = "") -> str:
    """A final response to a request (an INVITE mostly), in its transaction (all Vias, From,
    To + our tag unless it has one, Call-ID, CSeq); `extra` is more header lines."""
    seq, method = invite.cseq
    to = invite.header("to") or ""
    if not _TAG.search(to):
        to += f";tag={to_tag}"
    return (f"SIP/2.0 {code} {reason}\r\n" + _copy(invite, "Via", "From")
            + f"To: {to}\r\n" + _copy(invite, "Call-ID") + f"CSeq: {seq} {method}\r\n" + extra
            + "Content-Length: 0\r\n\r\n")


# what the line does, in SIP terms (pyVoIP 1.6.8 knows these four methods and no other)
PYVOIP_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL"})
_ALLOW = "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n"


def answer_other_request(request: SipMessage, to_tag: str) -> str | None:
    """Our answer to a request pyVoIP cannot read (it drops them without a word).

    OPTIONS gets 200 with what we accept (RFC 3261 11.2): PBXs and trunks send it to the
    registered contact as a keepalive ("qualify") and stop sending calls to a contact that
    does not answer. Any other method gets 405 with Allow (RFC 3261 8.2.1), so the sender
    stops retransmitting it. An ACK is never answered (RFC 3261 17.2.3).
    """
    if request.method is None or request.method in PYVOIP_METHODS:
        return None
    if request.method == "OPTIONS":
        return response_to(request, 200, "OK", to_tag,
                           _ALLOW + "Accept: application/sdp\r\n")
    return response_to(request, 405, "Method Not Allowed", to_tag, _ALLOW)


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
    if status in (486, 600, 603):
        # 603 Decline: the callee refused the call. RFC 3398 maps it to ISUP cause 21 (call
        # rejected), which the Asterisk and FreeSWITCH adapters report as busy: same fact, same cause
        return EndCause.BUSY
    if status in (408, 480):
        return EndCause.NO_ANSWER
    if status == 487:
        return EndCause.CANCELED
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
    frm = to_e164(caller_user(invite), ctx.region)
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


# ---- digest authentication (RFC 3261 22, RFC 2617 3.2, RFC 7616) ------------------------
# pyVoIP 1.6.8 answers a 401 only, with the digest uri `sip:server;transport=UDP` (not the
# Request-URI), never with qop/cnonce/nc, and never a 407: the line computes its own answers.

_DIGEST_HASHES = {"MD5": "md5", "SHA-256": "sha256"}  # RFC 7616 3.2 (-sess variants not offered)
_AUTH_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*,?')


@dataclass(frozen=True, slots=True)
class Challenge:
    """One Digest challenge (a WWW-Authenticate or Proxy-Authenticate value)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()          # the qop-options offered, lower case
    opaque: str | None = None
    stale: bool = False
    proxy: bool = False                # from a 407: answer in Proxy-Authorization

    @property
    def answer_header(self) -> str:
        return "Proxy-Authorization" if self.proxy else "Authorization"


def parse_challenge(value: str, *, proxy: bool = False) -> Challenge | None:
    """A `Digest realm="...", nonce="...", ...` value; None for another scheme (Basic...).

    Quoted values may hold commas (`qop="auth,auth-int"`); names and `stale`/`algorithm`
    tokens are case-insensitive (RFC 2617 1.2, 3.2.1).
    """
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    for m in _AUTH_PARAM.finditer(rest):
        raw = m.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[m.group(1).lower()] = raw
    if "nonce" not in params:
        return None
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    return Challenge(realm=params.get("realm", ""), nonce=params["nonce"],
                     algorithm=params.get("algorithm", "MD5").upper(), qop=qop,
                     opaque=params.get("opaque"), stale=params.get("stale", "").lower() == "true",
                     proxy=proxy)


def challenge_of(response: SipMessage) -> Challenge | None:
    """The challenge of a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate) we can answer:
    the first Digest one with an algorithm we know (RFC 7616 3.7: the server lists its
    preferred first)."""
    proxy = response.status == 407
    name = "proxy-authenticate" if proxy else "www-authenticate"
    for value in response.headers.get(name, []):  # one header line per challenge
        challenge = parse_challenge(value, proxy=proxy)
        if challenge is not None and challenge.algorithm in _DIGEST_HASHES:
            return challenge
    return None


def _h(algorithm: str, text: str) -> str:
    return hashlib.new(_DIGEST_HASHES[algorithm], text.encode()).hexdigest()


def digest_response(challenge: Challenge, username: str, password: str, method: str, uri: str,
                    cnonce: str = "", nc: int = 1) -> str:
    """The `response` value (RFC 2617 3.2.2.1): with qop=auth when the challenge offers it,
    RFC 2069's KD(HA1, nonce:HA2) when it offers no qop."""
    alg = challenge.algorithm
    ha1 = _h(alg, f"{username}:{challenge.realm}:{password}")
    ha2 = _h(alg, f"{method}:{uri}")
    if "auth" in challenge.qop:
        return _h(alg, f"{ha1}:{challenge.nonce}:{nc:08x}:{cnonce}:auth:{ha2}")
    return _h(alg, f"{ha1}:{challenge.nonce}:{ha2}")


def credentials(challenge: Challenge, username: str, password: str, method: str, uri: str,
                cnonce: str, nc: int = 1) -> str:
    """The Authorization / Proxy-Authorization value answering `challenge` for one request;
    `uri` is that request's Request-URI (RFC 3261 22.4: the digest-uri must be it)."""
    resp = digest_response(challenge, username, password, method, uri, cnonce, nc)
    out = (f'Digest username="{_quote(username)}", realm="{_quote(challenge.realm)}", '
           f'nonce="{_quote(challenge.nonce)}", uri="{uri}", response="{resp}", '
           f"algorithm={challenge.algorithm}")
    if challenge.opaque is not None:
        out += f', opaque="{_quote(challenge.opaque)}"'
    if "auth" in challenge.qop:
        out += f', qop=auth, cnonce="{cnonce}", nc={nc:08x}'
    return out


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def authorized_retry(request: str, header: str, value: str, branch: str, cseq: int) -> str:
    """The request again, as a new transaction carrying the credentials (RFC 3261 8.1.3.5):
    same Call-ID, From, To and body, a new top-Via branch, CSeq `cseq`, earlier credentials
    for the same header replaced."""
    head, sep, body = request.partition("\r\n\r\n")
    lines = head.split("\r\n")
    out, via_done = [lines[0]], False
    for line in lines[1:]:
        name = line.partition(":")[0].strip().lower()
        if name in ("via", "v") and not via_done:
            via_done = True
            line = re.sub(r";\s*branch=[^;,\s]+", f";branch={branch}", line, flags=re.IGNORECASE)
        elif name == "cseq":
            line = re.sub(r"^(\s*\S+\s*:\s*)\d+", rf"\g<1>{cseq}", line)
        elif name == header.lower():
            continue
        out.append(line)
    at = next((i for i, ln in enumerate(out) if ln.lower().startswith("content-length")), len(out))
    out.insert(at, f"{header}: {value}")
    return "\r\n".join(out) + sep + body
