"""Asterisk ARI wire format: pure parsing of events/resources and building of REST calls.

Nothing here does I/O. Events arrive on the `/ari/events` WebSocket as one JSON
object per message (`{"type": "StasisStart", "timestamp": ..., "channel": {...}}`);
REST resources (channels, bridges, recordings) use the same object shapes.
Field names follow the ARI reference (Asterisk 16-22).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

import orjson

from cti.model import EndCause

# The ARI event types the adapter turns into call facts; others are parsed and ignored.
HANDLED = frozenset({
    "StasisStart", "StasisEnd", "ChannelStateChange", "Dial", "ChannelHangupRequest",
    "ChannelDestroyed", "ChannelHold", "ChannelUnhold", "ChannelEnteredBridge",
    "ChannelLeftBridge", "RecordingStarted", "RecordingFinished", "RecordingFailed",
    "PlaybackStarted", "PlaybackFinished", "ChannelDtmfReceived",
})


_ZERO = timedelta(0)


class WireError(ValueError):
    """A message that is not valid ARI (the message names what was wrong)."""


class AriChannel:
    """One ARI channel object: a typed, read-only view over its JSON.

    `id` is checked when the channel is parsed; the other fields are read from the JSON
    when first used (most events only need the id), and a field of the wrong shape raises
    WireError at that point.
    """

    __slots__ = ("_obj", "id")
    _obj: dict[str, Any]
    id: str

    def __init__(self, obj: dict[str, Any]) -> None:
        _set(self, "_obj", obj)
        _set(self, "id", str(obj["id"]))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"AriChannel is read-only ({name})")

    def __repr__(self) -> str:
        return f"AriChannel(id={self.id!r}, name={self.name!r}, state={self.state!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AriChannel) and other._obj == self._obj

    def __hash__(self) -> int:
        return hash(self.id)

    def _sub(self, key: str, name: str) -> str:
        sub = self._obj.get(key)
        if not sub:
            return ""
        if not isinstance(sub, dict):
            raise WireError(f"channel {self.id}: {key} is not an object")
        return str(sub.get(name) or "")

    @property
    def name(self) -> str:
        return str(self._obj.get("name") or "")

    @property
    def state(self) -> str:
        """Down | Rsrvd | OffHook | Dialing | Ring | Ringing | Up | Busy ..."""
        return str(self._obj.get("state") or "")

    @property
    def caller_number(self) -> str:
        return self._sub("caller", "number")

    @property
    def caller_name(self) -> str:
        return self._sub("caller", "name")

    @property
    def connected_number(self) -> str:
        return self._sub("connected", "number")

    @property
    def context(self) -> str:
        return self._sub("dialplan", "context")

    @property
    def exten(self) -> str:
        return self._sub("dialplan", "exten")

    @property
    def app_name(self) -> str:
        return self._sub("dialplan", "app_name")

    @property
    def app_data(self) -> str:
        return self._sub("dialplan", "app_data")

    @property
    def creationtime_raw(self) -> str:
        return self._obj.get("creationtime") or ""

    @property
    def creationtime(self) -> datetime | None:
        return parse_time(self.creationtime_raw)

    @property
    def endpoint(self) -> str:
        """`PJSIP/alice-0000002a` -> `PJSIP/alice` (the endpoint the channel belongs to)."""
        name = self.name
        tech, _, rest = name.partition("/")
        if not rest:
            return name
        base, sep, suffix = rest.rpartition("-")
        if sep and suffix and all(c in "0123456789abcdef" for c in suffix.lower()):
            return f"{tech}/{base}"
        return name


class AriEvent:
    """One ARI event: a typed, read-only view over its JSON.

    Checked when parsed: the type, the timestamp, the channel/peer/caller objects (each
    needs an id) and the hangup cause. The other fields (bridge, digit, args, recording,
    playback...) are read from the JSON when used and raise WireError there if malformed.
    """

    __slots__ = ("_obj", "caller", "cause", "channel", "peer", "timestamp", "type")
    type: str
    timestamp: datetime
    channel: AriChannel | None
    peer: AriChannel | None         # Dial: the channel being dialled
    caller: AriChannel | None       # Dial: the dialling channel (absent for originate)
    cause: int | None
    _obj: dict[str, Any]

    def __init__(self, etype: str, timestamp: datetime, obj: dict[str, Any], channel: AriChannel | None,
                 peer: AriChannel | None, caller: AriChannel | None, cause: int | None) -> None:
        _set(self, "type", etype)
        _set(self, "timestamp", timestamp)
        _set(self, "_obj", obj)
        _set(self, "channel", channel)
        _set(self, "peer", peer)
        _set(self, "caller", caller)
        _set(self, "cause", cause)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"AriEvent is read-only ({name})")

    def __repr__(self) -> str:
        return f"AriEvent(type={self.type!r}, timestamp={self.timestamp!r}, channel={self.channel!r})"

    def _bad(self, what: str) -> WireError:
        return WireError(f"{self.type} event has an invalid field: {what}")

    @property
    def application(self) -> str:
        return str(self._obj.get("application") or "")

    @property
    def bridge_id(self) -> str | None:
        bridge = self._obj.get("bridge")
        return str(bridge["id"]) if isinstance(bridge, dict) and bridge.get("id") else None

    @property
    def bridge_channels(self) -> tuple[str, ...]:
        bridge = self._obj.get("bridge")
        if not isinstance(bridge, dict):
            return ()
        chans = bridge.get("channels") or ()
        if not isinstance(chans, list | tuple):
            raise self._bad(f"bridge.channels is {type(chans).__name__}, not a list")
        return tuple(map(str, chans))

    @property
    def dialstatus(self) -> str | None:
        return self._obj.get("dialstatus") if self.type == "Dial" else None

    @property
    def digit(self) -> str | None:
        d = self._obj.get("digit")
        return str(d) if d is not None else None

    @property
    def args(self) -> tuple[str, ...]:
        a = self._obj.get("args")
        if not a:
            return ()
        if not isinstance(a, list | tuple):
            raise self._bad(f"args is {type(a).__name__}, not a list")
        return tuple(map(str, a))

    @property
    def recording(self) -> dict[str, Any]:
        return self._dict("recording")

    @property
    def playback(self) -> dict[str, Any]:
        return self._dict("playback")

    def _dict(self, key: str) -> dict[str, Any]:
        v = self._obj.get(key) or {}
        if not isinstance(v, dict):
            raise self._bad(f"{key} is {type(v).__name__}, not an object")
        return v


_set = object.__setattr__


def parse_time(value: Any) -> datetime | None:
    """ARI timestamps: `2026-11-22T09:40:01.130+0000` (also accepts `Z` / `+00:00`)."""
    if not value:
        return None
    if not isinstance(value, str):
        raise WireError(f"timestamp is not a string: {value!r}")
    try:
        dt = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        raise WireError(f"bad timestamp {value!r}") from None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt if dt.utcoffset() == _ZERO and dt.tzinfo is UTC else dt.astimezone(UTC)


def parse_channel(obj: Any) -> AriChannel:
    if not isinstance(obj, dict) or not obj.get("id"):
        raise WireError("channel object without an id")
    return AriChannel(obj)


def parse_event(message: str | bytes) -> AriEvent:
    """One WebSocket message -> AriEvent. Raises WireError naming the problem."""
    try:
        obj = orjson.loads(message)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"not JSON: {exc}") from None
    return event_from_dict(obj)


def event_from_dict(obj: Any) -> AriEvent:
    if not isinstance(obj, dict):
        raise WireError("event is not a JSON object")
    etype = obj.get("type")
    if not isinstance(etype, str) or not etype:
        raise WireError("event has no type")
    ts = parse_time(obj.get("timestamp"))
    if ts is None:
        raise WireError(f"{etype} event has no timestamp")
    cause = obj.get("cause")
    if cause is not None:
        try:
            cause = int(cause)
        except (TypeError, ValueError) as exc:
            raise WireError(f"{etype} event has an invalid field: {exc}") from None
    channel, peer, caller = obj.get("channel"), obj.get("peer"), obj.get("caller")
    return AriEvent(
        etype, ts, obj,
        parse_channel(channel) if channel else None,
        parse_channel(peer) if peer else None,
        parse_channel(caller) if caller else None,
        cause,
    )


def parse_channels(body: Any) -> list[AriChannel]:
    """`GET /channels` response -> channels (bad entries raise WireError)."""
    if not isinstance(body, list):
        raise WireError("GET /channels did not return a list")
    return [parse_channel(c) for c in body]


def parse_bridges(body: Any) -> dict[str, tuple[str, ...]]:
    """`GET /bridges` -> {bridge id: channel ids}."""
    if not isinstance(body, list):
        raise WireError("GET /bridges did not return a list")
    return {str(b["id"]): tuple(str(c) for c in b.get("channels") or ()) for b in body if b.get("id")}


# Q.850 hangup causes (ChannelDestroyed.cause) -> our end causes.
_CAUSES = {
    16: EndCause.NORMAL, 17: EndCause.BUSY, 18: EndCause.NO_ANSWER, 19: EndCause.NO_ANSWER,
    21: EndCause.BUSY, 31: EndCause.NORMAL, 0: EndCause.NORMAL,
}


def end_cause(cause: int | None) -> EndCause:
    if cause is None:
        return EndCause.NORMAL
    return _CAUSES.get(cause, EndCause.FAILED)


# Dial.dialstatus values that mean the dialled leg will not answer.
DIAL_FAILED = frozenset({"BUSY", "NOANSWER", "CANCEL", "CONGESTION", "CHANUNAVAIL", "DONTCALL", "TORTURE"})


def recording_name(rec: dict[str, Any]) -> str:
    return str(rec.get("name") or "")


def target_of(uri: str) -> tuple[str, str]:
    """`bridge:abc` -> ("bridge", "abc"); `channel:1.2` -> ("channel", "1.2")."""
    kind, _, ident = (uri or "").partition(":")
    return kind, ident


# ---- REST errors -----------------------------------------------------------------------

# what the first segment of a REST path addresses, for "... not found" errors
_RESOURCES = {"channels": "channel", "bridges": "bridge", "playbacks": "playback", "endpoints": "endpoint",
              "sounds": "sound", "deviceStates": "device state", "mailboxes": "mailbox"}


def error_text(body: str | bytes) -> str:
    """ARI's reason for a failed request: the `message` of its `{"message": ...}` body; any
    other body (a proxy's HTML page, plain text) is cut to one short line."""
    try:
        obj = orjson.loads(body)
    except (ValueError, UnicodeDecodeError):
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("message"), str) and obj["message"]:
        return obj["message"]
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return " ".join(text.split())[:200] or "no reason given"


def addressed(path: str) -> tuple[str, str]:
    """The resource a REST path names: `/bridges/b1/addChannel` -> ("bridge", "b1"),
    `/recordings/live/r1/stop` -> ("recording", "r1"), `/channels` -> ("channel", "")."""
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if parts[0] == "recordings":
        return "recording", parts[2] if len(parts) > 2 else ""
    return _RESOURCES.get(parts[0], parts[0] or "resource"), parts[1] if len(parts) > 1 else ""


# ---- REST request builders (method, path, query params) ----------------------------

@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None


def _p(s: str) -> str:
    return quote(s, safe="")


def originate(endpoint: str, app: str, app_args: str, channel_id: str, *, caller_id: str | None = None,
              timeout_s: float = 30, variables: dict[str, str] | None = None) -> Request:
    params = {"endpoint": endpoint, "app": app, "appArgs": app_args, "channelId": channel_id,
              "timeout": str(max(1, math.ceil(timeout_s)))}
    if caller_id:
        params["callerId"] = caller_id
    body = {"variables": variables} if variables else None
    return Request("POST", "/channels", params, body)


def hangup(channel_id: str, reason: str = "normal") -> Request:
    return Request("DELETE", f"/channels/{_p(channel_id)}", {"reason": reason})


def answer(channel_id: str) -> Request:
    return Request("POST", f"/channels/{_p(channel_id)}/answer")


def create_bridge(bridge_id: str, kind: str = "mixing") -> Request:
    return Request("POST", f"/bridges/{_p(bridge_id)}", {"type": kind})


def destroy_bridge(bridge_id: str) -> Request:
    return Request("DELETE", f"/bridges/{_p(bridge_id)}")


def add_channel(bridge_id: str, *channel_ids: str) -> Request:
    return Request("POST", f"/bridges/{_p(bridge_id)}/addChannel", {"channel": ",".join(channel_ids)})


def remove_channel(bridge_id: str, channel_id: str) -> Request:
    return Request("POST", f"/bridges/{_p(bridge_id)}/removeChannel", {"channel": channel_id})


def hold(channel_id: str, on: bool = True) -> Request:
    return Request("POST" if on else "DELETE", f"/channels/{_p(channel_id)}/hold")


def bridge_moh(bridge_id: str, on: bool, moh_class: str = "default") -> Request:
    if on:
        return Request("POST", f"/bridges/{_p(bridge_id)}/moh", {"mohClass": moh_class})
    return Request("DELETE", f"/bridges/{_p(bridge_id)}/moh")


def snoop(channel_id: str, app: str, app_args: str, snoop_id: str, *, spy: str = "both",
          whisper: str = "none") -> Request:
    return Request("POST", f"/channels/{_p(channel_id)}/snoop",
                   {"spy": spy, "whisper": whisper, "app": app, "appArgs": app_args, "snoopId": snoop_id})


def record_bridge(bridge_id: str, name: str, fmt: str = "wav") -> Request:
    return Request("POST", f"/bridges/{_p(bridge_id)}/record",
                   {"name": name, "format": fmt, "ifExists": "overwrite", "beep": "false"})


def live_recording(name: str, action: str) -> Request:
    """action: stop | pause | unpause (DELETE .../pause resumes)."""
    if action == "stop":
        return Request("POST", f"/recordings/live/{_p(name)}/stop")
    if action == "pause":
        return Request("POST", f"/recordings/live/{_p(name)}/pause")
    if action == "resume":
        return Request("DELETE", f"/recordings/live/{_p(name)}/pause")
    raise ValueError(f"unknown recording action {action!r}")


def stored_recording_file(name: str) -> Request:
    return Request("GET", f"/recordings/stored/{_p(name)}/file")


def play(channel_id: str, media: str, playback_id: str) -> Request:
    return Request("POST", f"/channels/{_p(channel_id)}/play", {"media": media, "playbackId": playback_id})


def dtmf(channel_id: str, digits: str) -> Request:
    return Request("POST", f"/channels/{_p(channel_id)}/dtmf", {"dtmf": digits})


def redirect(channel_id: str, endpoint: str) -> Request:
    return Request("POST", f"/channels/{_p(channel_id)}/redirect", {"endpoint": endpoint})


def continue_in_dialplan(channel_id: str, context: str, extension: str, priority: int = 1) -> Request:
    return Request("POST", f"/channels/{_p(channel_id)}/continue",
                   {"context": context, "extension": extension, "priority": str(priority)})


def list_channels() -> Request:
    return Request("GET", "/channels")


def list_bridges() -> Request:
    return Request("GET", "/bridges")
