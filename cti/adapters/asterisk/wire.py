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
from urllib.parse import quote

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


@dataclass(frozen=True, slots=True)
class AriChannel:
    id: str
    name: str
    state: str                      # Down | Rsrvd | OffHook | Dialing | Ring | Ringing | Up | Busy ...
    caller_number: str = ""
    caller_name: str = ""
    connected_number: str = ""
    context: str = ""
    exten: str = ""
    app_name: str = ""
    app_data: str = ""
    creationtime_raw: str = ""      # parsed on demand: only a new call needs it

    @property
    def creationtime(self) -> datetime | None:
        return parse_time(self.creationtime_raw)

    @property
    def endpoint(self) -> str:
        """`PJSIP/alice-0000002a` -> `PJSIP/alice` (the endpoint the channel belongs to)."""
        tech, _, rest = self.name.partition("/")
        if not rest:
            return self.name
        base, sep, suffix = rest.rpartition("-")
        if sep and suffix and all(c in "0123456789abcdef" for c in suffix.lower()):
            return f"{tech}/{base}"
        return self.name


@dataclass(frozen=True, slots=True)
class AriEvent:
    type: str
    timestamp: datetime
    application: str = ""
    channel: AriChannel | None = None
    peer: AriChannel | None = None        # Dial: the channel being dialled
    caller: AriChannel | None = None      # Dial: the dialling channel (absent for originate)
    bridge_id: str | None = None
    bridge_channels: tuple[str, ...] = ()
    dialstatus: str | None = None
    cause: int | None = None
    digit: str | None = None
    args: tuple[str, ...] = ()
    recording: dict[str, Any] = field(default_factory=dict)
    playback: dict[str, Any] = field(default_factory=dict)


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
    caller = obj.get("caller") or {}
    connected = obj.get("connected") or {}
    dialplan = obj.get("dialplan") or {}
    return AriChannel(
        id=str(obj["id"]),
        name=str(obj.get("name") or ""),
        state=str(obj.get("state") or ""),
        caller_number=str(caller.get("number") or ""),
        caller_name=str(caller.get("name") or ""),
        connected_number=str(connected.get("number") or ""),
        context=str(dialplan.get("context") or ""),
        exten=str(dialplan.get("exten") or ""),
        app_name=str(dialplan.get("app_name") or ""),
        app_data=str(dialplan.get("app_data") or ""),
        creationtime_raw=obj.get("creationtime") or "",
    )


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
    bridge = obj.get("bridge")
    cause = obj.get("cause")
    channel, peer, caller = obj.get("channel"), obj.get("peer"), obj.get("caller")
    try:
        return AriEvent(
            type=etype,
            timestamp=ts,
            application=obj.get("application") or "",
            channel=parse_channel(channel) if channel else None,
            peer=parse_channel(peer) if peer else None,
            caller=parse_channel(caller) if caller else None,
            bridge_id=str(bridge["id"]) if isinstance(bridge, dict) and bridge.get("id") else None,
            bridge_channels=tuple(map(str, bridge.get("channels") or ())) if isinstance(bridge, dict) else (),
            dialstatus=obj.get("dialstatus") if etype == "Dial" else None,
            cause=int(cause) if cause is not None else None,
            digit=str(obj["digit"]) if obj.get("digit") is not None else None,
            args=tuple(map(str, obj["args"])) if obj.get("args") else (),
            recording=obj.get("recording") or {},
            playback=obj.get("playback") or {},
        )
    except WireError:
        raise
    except (TypeError, ValueError) as exc:
        raise WireError(f"{etype} event has an invalid field: {exc}") from None


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
