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

from dataclasses import dataclass, field
from datetime import UTC, datetime
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


def _parse_header_block(block: bytes, *, decode: bool = False) -> dict[str, str]:
    text = block.decode("utf-8", "replace")
    per_value = False
    if decode:
        # plain events URL-encode every value. Decoding the whole block at once is safe (and
        # much faster) unless a value hides an encoded line break, which would split lines.
        per_value = "%0A" in text or "%0D" in text or "%0a" in text or "%0d" in text
        if not per_value:
            text = unquote(text)
    if not per_value and "\r" not in text:
        try:  # fast path: FreeSWITCH always writes "Name: value" lines
            return dict(line.split(": ", 1) for line in text.split("\n") if line)  # type: ignore[misc]
        except ValueError:
            pass  # an unusual line: the careful path below says which
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
        self._buf += data
        frames: list[Frame] = []
        while True:
            if self._pending is None:
                # tolerate stray newlines between frames
                while self._buf[:1] in (b"\n", b"\r") and self._buf:
                    del self._buf[:1]
                end = self._buf.find(b"\n\n")
                if end < 0:
                    if len(self._buf) > MAX_HEADER_BYTES:
                        self._buf.clear()
                        raise WireError("header block larger than 64 KiB without an empty line")
                    return frames
                block = bytes(self._buf[:end])
                del self._buf[:end + 2]
                headers = _parse_header_block(block)
                try:
                    length = int(headers.get("Content-Length", "0") or 0)
                except ValueError:
                    raise WireError(f"bad Content-Length {headers.get('Content-Length')!r}") from None
                if length < 0 or length > MAX_BODY_BYTES:
                    raise WireError(f"Content-Length {length} out of range")
                if length == 0:
                    frames.append(Frame(headers))
                    continue
                self._pending, self._need = headers, length
            if len(self._buf) < self._need:
                return frames
            body = bytes(self._buf[:self._need])
            del self._buf[:self._need]
            frames.append(Frame(self._pending, body))
            self._pending, self._need = None, 0


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


def parse_event(frame: Frame) -> FsEvent:
    """An event frame (json or plain) -> FsEvent. Raises WireError naming the problem."""
    ctype = frame.content_type
    if ctype == "text/event-json":
        try:
            obj = orjson.loads(frame.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise WireError(f"event-json body is not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise WireError("event-json body is not an object")
        body = str(obj.pop("_body", "") or "")
        headers = {str(k): str(v) for k, v in obj.items()}
    elif ctype == "text/event-plain":
        head, _, rest = frame.body.partition(b"\n\n")
        headers = _parse_header_block(head, decode=True)
        body = ""
        if "Content-Length" in headers:
            n = int(headers["Content-Length"])
            body = rest[:n].decode("utf-8", "replace")
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


_CAUSES = {
    "NORMAL_CLEARING": EndCause.NORMAL, "USER_BUSY": EndCause.BUSY, "CALL_REJECTED": EndCause.BUSY,
    "NO_ANSWER": EndCause.NO_ANSWER, "NO_USER_RESPONSE": EndCause.NO_ANSWER,
    "ORIGINATOR_CANCEL": EndCause.CANCELED, "LOSE_RACE": EndCause.CANCELED,
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
