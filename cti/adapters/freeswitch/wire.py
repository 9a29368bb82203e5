"""FreeSWITCH event socket (mod_event_socket) wire format: pure framing, parsing, building.

A frame is a block of `Name: value` header lines ended by an empty line; when it has a
`Content-Length`, that many bytes of body follow. The `Content-Type` says what it is:
`auth/request`, `command/reply` (`Reply-Text: +OK ...`), `api/response` (body = output),
`text/event-json` (body = one JSON object of event headers, `_body` for a body),
`text/event-plain` (body = URL-encoded header lines, an empty line, then an optional
Content-Length body of its own), `text/disconnect-notice`, `text/rude-rejection`.
Nothing here does I/O.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from typing import Any
from urllib.parse import unquote

import orjson

from cti.model import EndCause

# Events the adapter subscribes to (`event json ...`).
EVENTS = (
    "CHANNEL_CREATE", "CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA", "CHANNEL_ANSWER",
    "CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_HOLD", "CHANNEL_UNHOLD", "CHANNEL_EXECUTE", "CHANNEL_PARK", "RECORD_START",
    "RECORD_STOP", "PLAYBACK_START", "PLAYBACK_STOP", "DTMF", "BACKGROUND_JOB",
)
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024


class WireError(ValueError):
    """Bytes that are not valid event-socket protocol (the message says what was wrong)."""


@dataclass(frozen=True, slots=True)
class Frame:
    headers: dict[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @property
    def reply_text(self) -> str:
        return self.headers.get("Reply-Text", "")


# What stops the whole-block URL-decoding in C: an encoded CR/LF inside a value (decoding
# the whole block would split that line) or a `%` not followed by two hex digits (left as
# is by unquote(), but a2b_qp would read `%=`/a final `%` differently).
_NOT_PLAIN_PERCENT = re.compile(rb"%(?:0[AaDd]|(?![0-9A-Fa-f]{2}))")
_ENCODED_BREAK = re.compile(rb"%0[AaDd]")


def _unquote_block(block: bytes) -> str:
    """URL-decode a whole block in C: `%XX` is quoted-printable's `=XX` once every `=` is
    itself escaped. Only for blocks where every `%` starts a valid `%XX` (a stray `%=`
    or `%` at the end would mean something else to a2b_qp); same result as unquote()."""
    return binascii.a2b_qp(block.replace(b"=", b"=3D").replace(b"%", b"=")).decode("utf-8", "replace")


def _parse_header_block(block: bytes, *, decode: bool = False) -> dict[str, str]:
    per_value = False
    if decode and b"%" in block:
        # plain events URL-encode every value: decode the whole block at once (in C) unless
        # a value hides an encoded line break (per value then) or a stray `%` (unquote()).
        if _NOT_PLAIN_PERCENT.search(block) is None:
            text = _unquote_block(block)
        elif _ENCODED_BREAK.search(block) is not None:
            per_value = True
            text = block.decode("utf-8", "replace")
        else:
            text = unquote(block.decode("utf-8", "replace"))
    else:
        text = block.decode("utf-8", "replace")
    if not per_value and "\r" not in text:
        lines = text.split("\n")
        try:  # fast path: FreeSWITCH always writes "Name: value" lines (split in C, no per-line bytecode)
            return dict(map(str.split, lines, repeat(": "), repeat(1)))  # type: ignore[arg-type]
        except ValueError:  # an empty line, or an unusual one (the careful path below says which)
            try:
                return dict(line.split(": ", 1) for line in lines if line)  # type: ignore[misc]
            except ValueError:
                pass
    headers: dict[str, str] = {}
    for line in text.split("\n"):
        name, sep, value = line.partition(":")
        if not sep:
            if line.strip():
                raise WireError(f"header line without a colon: {line[:60]!r}")
            continue
        value = value.strip()
        headers[name.strip()] = unquote(value) if per_value and "%" in value else value
    return headers


class FrameParser:
    """Incremental framing: `feed(data)` returns the complete frames received so far."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pending: dict[str, str] | None = None
        self._need = 0

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        if buf:
            buf += data
            if self._pending is not None and len(buf) < self._need:
                return []  # still inside a body: just keep the bytes (no copy per chunk)
            data = bytes(buf)
            buf.clear()
        # Frames are cut from `data` by position; what is left over goes back to the buffer.
        frames: list[Frame] = []
        pos, size = 0, len(data)
        try:
            while True:
                if self._pending is None:
                    # tolerate stray newlines between frames
                    while pos < size and data[pos] in (10, 13):
                        pos += 1
                    end = data.find(b"\n\n", pos)
                    if end < 0:
                        if size - pos > MAX_HEADER_BYTES:
                            pos = size
                            raise WireError("header block larger than 64 KiB without an empty line")
                        return frames
                    block = data[pos:end]
                    pos = end + 2
                    headers = _parse_header_block(block)
                    length = headers.get("Content-Length")
                    if not length:
                        frames.append(Frame(headers))
                        continue
                    try:
                        need = int(length)
                    except ValueError:
                        raise WireError(f"bad Content-Length {length!r}") from None
                    if need < 0 or need > MAX_BODY_BYTES:
                        raise WireError(f"Content-Length {need} out of range")
                    if need == 0:
                        frames.append(Frame(headers))
                        continue
                    self._pending, self._need = headers, need
                if size - pos < self._need:
                    return frames
                body = data[pos:pos + self._need]
                pos += self._need
                frames.append(Frame(self._pending, body))  # type: ignore[arg-type]
                self._pending, self._need = None, 0
        finally:
            if pos < size:
                buf += memoryview(data)[pos:]


@dataclass(frozen=True, slots=True)
class FsEvent:
    name: str
    headers: dict[str, str]
    body: str = ""

    def get(self, key: str, default: str = "") -> str:
        return self.headers.get(key, default)

    @property
    def uuid(self) -> str:
        return self.headers.get("Unique-ID", "")

    @property
    def other_uuid(self) -> str:
        return self.headers.get("Other-Leg-Unique-ID") or self.headers.get("Bridge-B-Unique-ID", "")

    @property
    def timestamp(self) -> datetime:
        ts = self.headers.get("Event-Date-Timestamp")
        if ts and ts.isdigit():
            return datetime.fromtimestamp(int(ts) / 1_000_000, UTC)
        raise WireError(f"{self.name} event without Event-Date-Timestamp")

    @property
    def seq(self) -> int:
        s = self.headers.get("Event-Sequence", "")
        return int(s) if s.isdigit() else 0

    def var(self, name: str) -> str:
        return self.headers.get(f"variable_{name}", "")


def _json_value(value: object) -> str:
    # a multi-valued header is a JSON array in event-json; event-plain writes the same header
    # as `ARRAY::a|:b`, so both formats read alike
    if isinstance(value, list):
        return "ARRAY::" + "|:".join(str(v) for v in value)
    return str(value)


def _load_event_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        error = exc
    # FreeSWITCH's JSON writer escapes control characters but copies other bytes as they are,
    # so a header that was not UTF-8 (a Latin-1 caller name, a phone's user agent) reaches us
    # raw: read those bytes as U+FFFD rather than lose the whole event
    try:
        return orjson.loads(body.decode("utf-8", "replace"))
    except ValueError:
        raise WireError(f"event-json body is not JSON: {error}") from None


def parse_event(frame: Frame) -> FsEvent:
    """An event frame (json or plain) -> FsEvent. Raises WireError naming the problem."""
    ctype = frame.content_type
    if ctype == "text/event-json":
        obj = _load_event_json(frame.body)
        if not isinstance(obj, dict):
            raise WireError("event-json body is not an object")
        body = str(obj.pop("_body", "") or "")
        headers = {str(k): _json_value(v) for k, v in obj.items()}
    elif ctype == "text/event-plain":
        head, _, rest = frame.body.partition(b"\n\n")
        headers = _parse_header_block(head, decode=True)
        body = ""
        if "Content-Length" in headers:
            length = headers["Content-Length"]
            if not length.isdigit():
                raise WireError(f"event-plain body has a bad Content-Length {length!r}")
            body = rest[:int(length)].decode("utf-8", "replace")
    else:
        raise WireError(f"not an event frame (Content-Type {ctype!r})")
    name = headers.get("Event-Name", "")
    if not name:
        raise WireError("event without Event-Name")
    return FsEvent(name, headers, body)


@dataclass(frozen=True, slots=True)
class ShowChannel:
    uuid: str
    direction: str
    created_epoch: int
    name: str
    cid_num: str
    dest: str
    application: str
    application_data: str
    callstate: str
    extra: dict[str, Any] = field(default_factory=dict)


def parse_show_channels(text: str) -> list[ShowChannel]:
    """`api show channels as json` output -> rows (`{"row_count": 0}` when idle)."""
    try:
        obj = orjson.loads(text)
    except ValueError as exc:
        raise WireError(f"show channels output is not JSON: {exc}") from None
    if not isinstance(obj, dict) or "row_count" not in obj:
        raise WireError("show channels output has no row_count")
    rows = obj.get("rows") or []
    out = []
    for r in rows:
        if not isinstance(r, dict) or not r.get("uuid"):
            raise WireError("show channels row without a uuid")
        out.append(ShowChannel(
            uuid=str(r["uuid"]), direction=str(r.get("direction") or ""),
            created_epoch=int(r.get("created_epoch") or 0), name=str(r.get("name") or ""),
            cid_num=str(r.get("cid_num") or ""), dest=str(r.get("dest") or ""),
            application=str(r.get("application") or ""), application_data=str(r.get("application_data") or ""),
            callstate=str(r.get("callstate") or ""), extra=r,
        ))
    return out


def parse_show_calls(text: str) -> dict[str, str]:
    """`api show calls as json` -> {uuid: bridged uuid} (both directions)."""
    try:
        obj = orjson.loads(text)
    except ValueError as exc:
        raise WireError(f"show calls output is not JSON: {exc}") from None
    pairs: dict[str, str] = {}
    for r in obj.get("rows") or []:
        a, b = str(r.get("uuid") or ""), str(r.get("b_uuid") or "")
        if a and b:
            pairs[a] = b
            pairs[b] = a
    return pairs


def job_result(body: str) -> tuple[bool, str]:
    """BACKGROUND_JOB / api body: `+OK <data>` or `-ERR <reason>`."""
    text = body.strip()
    if text.startswith("+OK"):
        return True, text[3:].strip()
    if text.startswith("-ERR"):
        return False, text[4:].strip()
    return False, text or "empty reply"


# How mod_commands says a uuid names no channel; the wording differs per command (uuid_kill,
# uuid_setvar: "No such channel!"; uuid_bridge, uuid_broadcast: "Invalid uuid"; uuid_record,
# uuid_send_dtmf, uuid_recv_dtmf: "Cannot locate session!").
_MISSING_CHANNEL = ("no such channel", "invalid uuid", "cannot locate session")


def channel_missing(detail: str) -> bool:
    """Whether an api error (the text after -ERR) means the channel is gone."""
    text = detail.lower()
    return any(phrase in text for phrase in _MISSING_CHANNEL)


_CAUSES = {
    "NORMAL_CLEARING": EndCause.NORMAL, "USER_BUSY": EndCause.BUSY, "CALL_REJECTED": EndCause.BUSY,
    "NO_ANSWER": EndCause.NO_ANSWER, "NO_USER_RESPONSE": EndCause.NO_ANSWER,
    "ORIGINATOR_CANCEL": EndCause.CANCELED, "LOSE_RACE": EndCause.CANCELED,
    # a dial string's per-leg `leg_timeout` ran out: the leg rang unanswered
    "ALLOTTED_TIMEOUT": EndCause.NO_ANSWER,
    # the ringing leg was answered elsewhere (intercept / call pickup)
    "PICKED_OFF": EndCause.CANCELED,
    "NORMAL_UNSPECIFIED": EndCause.NORMAL, "SUCCESS": EndCause.NORMAL, "": EndCause.NORMAL,
}


def end_cause(hangup_cause: str | None) -> EndCause:
    return _CAUSES.get((hangup_cause or "").upper(), EndCause.FAILED)


# ---- building commands -------------------------------------------------------------

def command(line: str, **headers: str) -> bytes:
    """One command frame: the line, optional headers, an empty line."""
    if "\n" in line:
        raise ValueError("a command line cannot contain a newline")
    extra = "".join(f"{k.replace('_', '-')}: {v}\n" for k, v in headers.items())
    return f"{line}\n{extra}\n".encode()


def auth(password: str) -> bytes:
    return command(f"auth {password}")


def subscribe(events: tuple[str, ...] = EVENTS) -> bytes:
    return command("event json " + " ".join(events))


def api(cmd: str) -> bytes:
    return command(f"api {cmd}")


def bgapi(cmd: str, job_uuid: str) -> bytes:
    return command(f"bgapi {cmd}", Job_UUID=job_uuid)


def _var(value: object) -> str:
    # channel variable values: commas would split the list, so they are escaped
    return str(value).replace(",", "\\,").replace("}", "")


def originate(endpoint: str, app: str, variables: dict[str, object]) -> str:
    """`originate {k=v,...}endpoint &app(...)` (the command string, for bgapi)."""
    vars_ = ",".join(f"{k}={_var(v)}" for k, v in variables.items())
    return f"originate {{{vars_}}}{endpoint} {app}"


def parse_originate(cmd: str) -> tuple[dict[str, str], str, str]:
    """Inverse of `originate` (for tests and the fake): (variables, endpoint, app)."""
    rest = cmd.removeprefix("originate").strip()
    variables: dict[str, str] = {}
    if rest.startswith("{"):
        close = rest.index("}")
        body, rest = rest[1:close], rest[close + 1:]
        parts, cur, esc = [], "", False
        for ch in body:
            if esc:
                cur += ch
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == ",":
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        if cur:
            parts.append(cur)
        for p in parts:
            k, _, v = p.partition("=")
            variables[k.strip()] = v
    endpoint, _, app = rest.strip().partition(" ")
    return variables, endpoint, app.strip()
