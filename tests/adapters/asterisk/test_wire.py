"""ARI wire parsing over recorded event streams (pure, no I/O)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cti.adapters.asterisk import wire
from cti.model import EndCause

FIX = Path(__file__).parent / "fixtures"


def _lines(name: str) -> list[str]:
    return [line for line in (FIX / name).read_text().splitlines() if line.strip()]


def test_every_recorded_event_parses_with_its_channel_and_time() -> None:
    events = [wire.parse_event(line) for line in _lines("inbound_full.jsonl")]
    assert {e.type for e in events} >= {"StasisStart", "Dial", "ChannelStateChange", "ChannelEnteredBridge",
                                       "ChannelHold", "ChannelUnhold", "RecordingStarted", "RecordingFinished",
                                       "ChannelDtmfReceived", "ChannelDestroyed"}
    assert all(e.timestamp.tzinfo is not None for e in events)
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)
    first = events[0]
    assert first.type == "StasisStart" and first.channel is not None
    assert first.channel.caller_number == "0612345678" and first.channel.exten == "0170000100"
    assert first.channel.app_name == "Stasis" and first.channel.app_data == "cti"
    dials = [e for e in events if e.type == "Dial"]
    assert dials[0].peer is not None and dials[0].peer.endpoint == "PJSIP/alice"
    assert {d.dialstatus for d in dials} >= {"RINGING", "ANSWER"}
    destroyed = [e for e in events if e.type == "ChannelDestroyed"]
    assert all(e.cause is not None for e in destroyed)
    rec = next(e for e in events if e.type == "RecordingStarted")
    assert wire.target_of(rec.recording["target_uri"])[0] == "bridge"


def test_asterisk_timestamp_formats() -> None:
    for raw in ("2026-11-22T09:40:01.130+0000", "2026-11-22T09:40:01.130Z", "2026-11-22T10:40:01.130+01:00"):
        assert wire.parse_time(raw).isoformat() == "2026-11-22T09:40:01.130000+00:00"


@pytest.mark.parametrize("message, reason", [
    ("not json", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"timestamp": "2026-11-22T09:40:01.130+0000"}', "no type"),
    ('{"type": "StasisStart"}', "no timestamp"),
    ('{"type": "StasisStart", "timestamp": "yesterday"}', "bad timestamp"),
    ('{"type": "StasisStart", "timestamp": "2026-11-22T09:40:01.130+0000", "channel": {"name": "x"}}', "without an id"),
    ('{"type": "ChannelDestroyed", "timestamp": "2026-11-22T09:40:01Z", "cause": "x", "channel": {"id": "1"}}',
     "invalid field"),
])
def test_malformed_messages_raise_a_wire_error_naming_the_problem(message: str, reason: str) -> None:
    with pytest.raises(wire.WireError, match=reason):
        wire.parse_event(message)


def test_unknown_event_types_parse_but_are_not_handled() -> None:
    ev = wire.parse_event(json.dumps({"type": "DeviceStateChanged", "timestamp": "2026-11-22T09:40:01Z"}))
    assert ev.type not in wire.HANDLED


def test_channel_endpoint_strips_the_sequence_suffix() -> None:
    ch = wire.parse_channel({"id": "1", "name": "PJSIP/alice-0000002a"})
    assert ch.endpoint == "PJSIP/alice"
    assert wire.parse_channel({"id": "1", "name": "Local/100@ctx-00000001;1"}).endpoint.startswith("Local/")
    assert wire.parse_channel({"id": "1", "name": "Snoop/1.2-00000003"}).endpoint == "Snoop/1.2"


def test_hangup_causes_map_to_end_causes() -> None:
    assert wire.end_cause(16) is EndCause.NORMAL
    assert wire.end_cause(17) is EndCause.BUSY
    assert wire.end_cause(19) is EndCause.NO_ANSWER
    assert wire.end_cause(34) is EndCause.FAILED
    assert wire.end_cause(None) is EndCause.NORMAL


def test_request_builders_quote_ids_and_carry_the_documented_parameters() -> None:
    req = wire.originate("PJSIP/alice", "cti", "agent", "cti-a-1", caller_id="+33612345678", timeout_s=0.3)
    assert (req.method, req.path) == ("POST", "/channels")
    assert req.params == {"endpoint": "PJSIP/alice", "app": "cti", "appArgs": "agent", "channelId": "cti-a-1",
                          "timeout": "1", "callerId": "+33612345678"}
    assert wire.hangup("a/b").path == "/channels/a%2Fb"
    snoop = wire.snoop("1.2", "cti", "snoop", "s1", whisper="out")
    assert snoop.params["spy"] == "both" and snoop.params["whisper"] == "out"
    assert wire.live_recording("r1", "resume").method == "DELETE"
    with pytest.raises(ValueError):
        wire.live_recording("r1", "rewind")


def test_resync_resources_parse() -> None:
    raw = json.loads(_lines("inbound_full.jsonl")[0])["channel"]
    assert wire.parse_channels([raw])[0].id == raw["id"]
    assert wire.parse_bridges([{"id": "b1", "channels": ["1", "2"]}]) == {"b1": ("1", "2")}
    with pytest.raises(wire.WireError):
        wire.parse_channels({"oops": 1})


def _m(fields: str) -> str:
    return '{"timestamp": "2026-11-22T09:40:01.130+0000", ' + fields + "}"


@pytest.mark.parametrize("message, read, reason", [
    (_m('"type": "StasisStart", "channel": {"id": "1", "caller": "0612"}'),
     lambda e: e.channel.caller_number, "caller is not an object"),
    (_m('"type": "StasisStart", "channel": {"id": "1", "dialplan": ["x"]}'),
     lambda e: e.channel.exten, "dialplan is not an object"),
    (_m('"type": "StasisStart", "channel": {"id": "1", "creationtime": "soon"}'),
     lambda e: e.channel.creationtime, "bad timestamp"),
    (_m('"type": "ChannelEnteredBridge", "bridge": {"id": "b", "channels": 5}'),
     lambda e: e.bridge_channels, "invalid field: bridge.channels"),
    (_m('"type": "StasisStart", "args": "agent"'), lambda e: e.args, "invalid field: args"),
    (_m('"type": "RecordingStarted", "recording": "r1"'), lambda e: e.recording, "invalid field: recording"),
    (_m('"type": "PlaybackStarted", "playback": 3'), lambda e: e.playback, "invalid field: playback"),
])
def test_fields_read_on_use_raise_a_wire_error_when_malformed(message: str, read, reason: str) -> None:  # type: ignore[no-untyped-def]
    ev = wire.parse_event(message)  # the checked part (type, time, ids, cause) is fine
    with pytest.raises(wire.WireError, match=reason):
        read(ev)


def test_events_and_channels_are_read_only() -> None:
    ev = wire.parse_event(_lines("inbound_full.jsonl")[0])
    with pytest.raises(AttributeError):
        ev.type = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        ev.channel.id = "x"  # type: ignore[misc, union-attr]
    assert ev.channel == wire.parse_channel(json.loads(_lines("inbound_full.jsonl")[0])["channel"])


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"message": "Bridge not found"}', "Bridge not found"),
    (b"<html><body><h1>502 Bad Gateway</h1>\n</body></html>", "<html><body><h1>502 Bad Gateway</h1> </body></html>"),
    (b'{"error": "x"}', '{"error": "x"}'),
    (b"", "no reason given"),
])
def test_error_text_is_asterisks_message_not_its_json(body: bytes, reason: str) -> None:
    assert wire.error_text(body) == reason


@pytest.mark.parametrize(("path", "resource"), [
    ("/channels/1763802000.1/answer", ("channel", "1763802000.1")),
    ("/bridges/cti-b-1.2/addChannel", ("bridge", "cti-b-1.2")),
    ("/recordings/live/cti-c%2F1-1/pause", ("recording", "cti-c/1-1")),
    ("/recordings/stored/rec-1/file", ("recording", "rec-1")),
    ("/channels", ("channel", "")),
])
def test_a_rest_path_names_the_resource_it_addresses(path: str, resource: tuple[str, str]) -> None:
    assert wire.addressed(path) == resource
