"""Event-socket framing and event parsing over recorded byte streams (pure, no I/O)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cti.adapters.freeswitch import wire
from cti.model import EndCause

FIX = Path(__file__).parent / "fixtures"


def _events(name: str, chunk: int = 65536) -> list[wire.FsEvent]:
    data = (FIX / name).read_bytes()
    parser = wire.FrameParser()
    frames: list[wire.Frame] = []
    for i in range(0, len(data), chunk):
        frames += parser.feed(data[i:i + chunk])
    return [wire.parse_event(f) for f in frames]


def test_json_and_plain_recordings_of_the_same_call_parse_to_the_same_headers() -> None:
    js, plain = _events("inbound_full.json.esl"), _events("inbound_full.plain.esl")
    assert [e.name for e in js] == [e.name for e in plain]
    assert {e.name for e in js} >= {"CHANNEL_CREATE", "CHANNEL_PROGRESS", "CHANNEL_ANSWER", "CHANNEL_BRIDGE",
                                   "CHANNEL_HOLD", "CHANNEL_UNHOLD", "RECORD_START", "RECORD_STOP", "DTMF",
                                   "CHANNEL_EXECUTE", "BACKGROUND_JOB", "CHANNEL_HANGUP_COMPLETE"}
    for a, b in zip(js, plain, strict=True):
        assert a.headers.get("Unique-ID") == b.headers.get("Unique-ID")
        assert a.headers.get("Channel-Name") == b.headers.get("Channel-Name")  # URL-decoded in plain
        assert a.body == b.body
    job = next(e for e in js if e.name == "BACKGROUND_JOB")
    assert wire.job_result(job.body)[0] is True
    create = js[0]
    assert create.get("Caller-Destination-Number") == "0170000100" and create.timestamp.tzinfo is not None
    assert [e.seq for e in js] == sorted(e.seq for e in js)


def test_framing_survives_byte_by_byte_delivery() -> None:
    assert [e.name for e in _events("inbound_full.json.esl", chunk=1)] == \
           [e.name for e in _events("inbound_full.json.esl")]


def test_replies_and_notices_frame_with_and_without_bodies() -> None:
    stream = (b"Content-Type: auth/request\n\n"
              b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n"
              b"Content-Type: api/response\nContent-Length: 6\n\n+OK a\n"
              b"Content-Type: text/disconnect-notice\nContent-Length: 23\n\nDisconnected, goodbye.\n")
    frames = wire.FrameParser().feed(stream)
    assert [f.content_type for f in frames] == ["auth/request", "command/reply", "api/response",
                                               "text/disconnect-notice"]
    assert frames[1].reply_text == "+OK accepted" and frames[2].body == b"+OK a\n"


@pytest.mark.parametrize("data, reason", [
    (b"Content-Type: api/response\nContent-Length: lots\n\n", "bad Content-Length"),
    (b"Content-Length: -4\n\n", "out of range"),
    (b"no colon here\n\n", "without a colon"),
])
def test_broken_framing_raises_a_wire_error(data: bytes, reason: str) -> None:
    with pytest.raises(wire.WireError, match=reason):
        wire.FrameParser().feed(data)


@pytest.mark.parametrize("frame, reason", [
    (wire.Frame({"Content-Type": "text/event-json"}, b"{not json"), "not JSON"),
    (wire.Frame({"Content-Type": "text/event-json"}, b'{"Unique-ID": "x"}'), "without Event-Name"),
    (wire.Frame({"Content-Type": "text/event-xml"}, b"<event/>"), "not an event frame"),
])
def test_bad_events_raise_a_wire_error(frame: wire.Frame, reason: str) -> None:
    with pytest.raises(wire.WireError, match=reason):
        wire.parse_event(frame)


def test_show_channels_parses_rows_and_the_idle_answer() -> None:
    rows = wire.parse_show_channels((FIX / "show_channels.json").read_text())
    assert len(rows) == 3 and any(r.direction == "inbound" for r in rows)
    assert any(r.application == "eavesdrop" for r in rows)
    assert wire.parse_show_channels('{"row_count": 0}') == []
    with pytest.raises(wire.WireError):
        wire.parse_show_channels("-ERR no reply")


def test_originate_builder_round_trips_and_escapes_commas() -> None:
    cmd = wire.originate("user/alice", "&park()", {"origination_uuid": "cti-a-1", "x": "a,b", "originate_timeout": 15})
    assert cmd == "originate {origination_uuid=cti-a-1,x=a\\,b,originate_timeout=15}user/alice &park()"
    assert wire.parse_originate(cmd) == ({"origination_uuid": "cti-a-1", "x": "a,b", "originate_timeout": "15"},
                                         "user/alice", "&park()")
    assert wire.bgapi("status", "j1") == b"bgapi status\nJob-UUID: j1\n\n"
    with pytest.raises(ValueError):
        wire.command("api status\nexit")


def test_hangup_causes_and_job_results() -> None:
    assert wire.end_cause("USER_BUSY") is EndCause.BUSY
    assert wire.end_cause("NO_ANSWER") is EndCause.NO_ANSWER
    assert wire.end_cause("ORIGINATOR_CANCEL") is EndCause.CANCELED
    assert wire.end_cause("DESTINATION_OUT_OF_ORDER") is EndCause.FAILED
    assert wire.job_result("-ERR USER_NOT_REGISTERED\n") == (False, "USER_NOT_REGISTERED")
    assert wire.job_result(json.dumps("x")) == (False, '"x"')


def test_plain_values_with_encoded_line_breaks_and_unusual_spacing_decode_per_value() -> None:
    body = (b"Event-Name: CUSTOM\nEvent-Date-Timestamp: 1795340930800038\n"
            b"variable_note: line%201%0Aline%202\nOdd-Header:no-space\n\n")
    frame = wire.Frame({"Content-Type": "text/event-plain"}, body)
    ev = wire.parse_event(frame)
    assert ev.var("note") == "line 1\nline 2" and ev.get("Odd-Header") == "no-space"
    fast = wire.parse_event(wire.Frame({"Content-Type": "text/event-plain"},
                                       b"Event-Name: CUSTOM\nChannel-Name: sofia%2Fa%40b\n\n"))
    assert fast.get("Channel-Name") == "sofia/a@b"


@pytest.mark.parametrize("encoded, decoded", [
    (b"a%3Db%3D%3D", "a=b=="),                      # encoded '='
    (b"x=1&y=2", "x=1&y=2"),                          # literal '=' (quoted-printable's escape char)
    (b"100%25%20off", "100% off"),
    (b"caf%C3%A9%20%e2%82%ac", "caf\u00e9 \u20ac"),   # UTF-8, either hex case
    (b"100% sure", "100% sure"),                      # a stray '%' stays as it is (unquote's rule)
    (b"50%", "50%"),
    (b"%=3D%", "%=3D%"),
    (b"tab%09end%20", "tab\tend "),
])
def test_plain_values_url_decode_like_unquote(encoded: bytes, decoded: str) -> None:
    from urllib.parse import unquote

    body = b"Event-Name: CUSTOM\nChannel-Name: sofia%2Fa%40b\nvariable_x: " + encoded + b"\n\n"
    ev = wire.parse_event(wire.Frame({"Content-Type": "text/event-plain"}, body))
    assert ev.var("x") == decoded == unquote(encoded.decode())
    assert ev.get("Channel-Name") == "sofia/a@b"


def test_plain_framing_survives_any_chunking() -> None:
    whole = _events("inbound_full.plain.esl")
    for chunk in (1, 7, 1000):
        parsed = _events("inbound_full.plain.esl", chunk=chunk)
        assert [(e.name, e.headers, e.body) for e in parsed] == [(e.name, e.headers, e.body) for e in whole]


def test_a_plain_event_with_a_bad_inner_content_length_is_a_wire_error() -> None:
    frame = wire.Frame({"Content-Type": "text/event-plain"}, b"Event-Name: CUSTOM\nContent-Length: many\n\nhi")
    with pytest.raises(wire.WireError, match="bad Content-Length"):
        wire.parse_event(frame)


def test_an_event_without_a_timestamp_raises_when_its_time_is_used() -> None:
    ev = wire.parse_event(wire.Frame({"Content-Type": "text/event-plain"}, b"Event-Name: CUSTOM\n\n"))
    with pytest.raises(wire.WireError, match="without Event-Date-Timestamp"):
        _ = ev.timestamp


def test_array_headers_read_the_same_in_json_and_plain() -> None:
    """A multi-valued header is a JSON array in event-json and `ARRAY::a|:b` (URL-encoded) in
    event-plain; both must give the same string, never a Python list's repr."""
    js = wire.parse_event(wire.Frame({"Content-Type": "text/event-json"},
                                     b'{"Event-Name": "CHANNEL_EXECUTE", "variable_x_list": ["a b", "c"]}'))
    plain = wire.parse_event(wire.Frame({"Content-Type": "text/event-plain"},
                                        b"Event-Name: CHANNEL_EXECUTE\nvariable_x_list: ARRAY%3A%3Aa%20b%7C%3Ac\n\n"))
    assert js.var("x_list") == plain.var("x_list") == "ARRAY::a b|:c"


@pytest.mark.parametrize("cause, expected", [
    ("ALLOTTED_TIMEOUT", EndCause.NO_ANSWER),   # leg_timeout expired while ringing
    ("PICKED_OFF", EndCause.CANCELED),          # answered by another phone (intercept)
    ("NO_USER_RESPONSE", EndCause.NO_ANSWER), ("CALL_REJECTED", EndCause.BUSY),
    ("UNALLOCATED_NUMBER", EndCause.FAILED), ("NORMAL_TEMPORARY_FAILURE", EndCause.FAILED),
])
def test_hangup_causes_from_ringing_legs(cause: str, expected: EndCause) -> None:
    assert wire.end_cause(cause) is expected


def test_event_json_with_bytes_that_are_not_utf8_still_parses() -> None:
    """FreeSWITCH's JSON writer copies header bytes as they came (a Latin-1 caller name, a
    phone's user agent with 0xFF filler): the event must survive, the odd bytes replaced."""
    body = (b'{"Event-Name": "CHANNEL_CREATE", "Unique-ID": "u1", "Caller-Caller-ID-Name": "Ren\xe9",'
            b' "variable_sip_user_agent": "Yealink SIP-T27G \xff\xff", "Caller-Caller-ID-Number": "0612345678"}')
    ev = wire.parse_event(wire.Frame({"Content-Type": "text/event-json"}, body))
    assert ev.uuid == "u1" and ev.get("Caller-Caller-ID-Number") == "0612345678"
    assert ev.get("Caller-Caller-ID-Name") == "Ren\ufffd"
