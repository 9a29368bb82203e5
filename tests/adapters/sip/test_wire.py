"""SIP wire functions over recorded datagrams (no network)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from cti.adapters.sip import wire
from cti.model import Direction, EventKind, make_call_id

FIX = Path(__file__).parent / "fixtures"
CTX = wire.LineContext(provider="line1", tenant="t1", agent="alice", queue_numbers={"+33170000100": "support"})
NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def load(name: str) -> wire.SipMessage:
    return wire.parse((FIX / name).read_bytes())


def test_invite_through_kamailio_parses() -> None:
    m = load("invite_from_customer.sip")
    assert (m.method, m.status, m.cseq) == ("INVITE", None, (1, "INVITE"))
    assert m.call_id == "1-24746@127.0.0.1"
    assert (m.from_user, m.to_user) == ("+33612345678", "+33170000100")
    assert len(m.headers["via"]) == 2 and "m=audio" in m.body


def test_inbound_invite_gives_created_queued_ringing() -> None:
    created, queued, ringing = wire.inbound_events(load("invite_from_customer.sip"), CTX, NOW)
    assert created.kind is EventKind.CREATED and created.direction is Direction.INBOUND
    assert (created.from_number, created.to_number, created.queue) == ("+33612345678", "+33170000100", "support")
    assert queued.queue == "support"
    assert (ringing.kind, ringing.agent) == (EventKind.RINGING, "alice")
    assert created.call_id == make_call_id("t1", "line1", "1-24746@127.0.0.1")
    again = wire.inbound_events(load("invite_from_customer.sip"), CTX, NOW)
    assert [e.event_id for e in again] == [created.event_id, queued.event_id, ringing.event_id]


def test_invite_to_a_number_that_is_no_queue_only_rings() -> None:
    ctx = wire.LineContext(provider="line1", agent="alice")
    assert [e.kind for e in wire.inbound_events(load("invite_from_customer.sip"), ctx, NOW)] == [
        EventKind.CREATED, EventKind.RINGING]


def test_pyvoip_200_with_hostless_to_is_tolerated() -> None:
    m = load("pyvoip_200_answer.sip")
    assert m.status == 200 and m.to_user == "1001" and m.to_tag == "b8c1d4f0"


def test_cancel_gives_no_answer_then_caller_hangup() -> None:
    m = load("cancel_from_customer.sip")
    assert m.method == "CANCEL" and m.cseq == (1, "CANCEL")
    no_answer, ended = wire.cancel_events(m.call_id, CTX, NOW, ringing=True)
    assert (no_answer.kind, no_answer.agent) == (EventKind.NO_ANSWER, "alice")
    assert ended.data["cause"] == "caller_hangup"


def test_487_answers_the_cancelled_invite_in_its_transaction() -> None:
    invite = load("invite_from_customer.sip")
    resp = wire.parse(wire.request_terminated(invite, "abc").encode())
    assert resp.status == 487 and resp.cseq == (1, "INVITE")
    assert resp.headers["via"] == invite.headers["via"]  # both Vias, so Kamailio matches it
    assert resp.to_tag == "abc" and resp.call_id == invite.call_id


def test_ack_for_486_reuses_the_invite_branch_and_the_to_tag() -> None:
    busy = load("busy_486.sip")
    assert wire.end_cause(busy.status) == "busy"
    ack = wire.parse(wire.ack_for_failure(busy, "sip:+33612345678@127.0.0.1:5060").encode())
    assert ack.method == "ACK" and ack.cseq == (busy.cseq[0], "ACK")
    assert ack.header("via") == busy.header("via") and ack.to_tag == busy.to_tag


def test_ack_for_2xx_goes_to_contact_through_the_record_route() -> None:
    ok = load("ok_200_invite.sip")
    ack = wire.parse(wire.ack_for_2xx(ok, "z9hG4bKnew").encode())
    assert ack.uri == "sip:2000@127.0.0.1:60441"
    assert ack.headers["route"] == ["<sip:127.0.0.1:42227;lr;ftag=bda89508>"]
    assert "branch=z9hG4bKnew" in ack.header("via") and ack.cseq == (2, "ACK")


def test_cancel_for_our_invite_keeps_its_transaction() -> None:
    invite = load("invite_from_customer.sip")
    cancel = wire.parse(wire.cancel_for(invite).encode())
    assert cancel.method == "CANCEL" and cancel.uri == invite.uri
    assert cancel.header("via") == invite.header("via") and cancel.cseq == (1, "CANCEL")


@pytest.mark.parametrize(("status", "cause"), [(486, "busy"), (600, "busy"), (480, "no_answer"),
                                               (487, "canceled"), (404, "failed"), (503, "failed")])
def test_end_causes(status: int, cause: str) -> None:
    assert wire.end_cause(status) == cause


def test_register_answer_is_no_call_fact() -> None:
    m = load("ok_200_register.sip")
    assert m.cseq == (1, "REGISTER") and m.to_user == "1001"


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "empty SIP message"),
    (b"HELLO world\r\n\r\n", "not a SIP/2.0 start line"),
    (b"SIP/2.0 abc OK\r\n\r\n", "invalid status line"),
    (b"INVITE sip:a@b SIP/2.0\r\nno colon here\r\n\r\n", "invalid header line"),
])
def test_garbage_is_named(raw: bytes, message: str) -> None:
    with pytest.raises(wire.SipParseError, match=message):
        wire.parse(raw)


def test_missing_call_id_is_named() -> None:
    with pytest.raises(wire.SipParseError, match="Call-ID"):
        _ = wire.parse(b"BYE sip:a@b SIP/2.0\r\nCSeq: 2 BYE\r\n\r\n").call_id


def test_compact_headers_and_display_names() -> None:
    m = wire.parse(b'INVITE sip:1001@h SIP/2.0\r\ni: abc\r\nf: "Bob" <sip:+33612345678@h>;tag=1\r\n'
                   b"t: <tel:+33170000100>\r\nCSeq: 1 INVITE\r\n\r\n")
    assert (m.call_id, m.from_user, m.to_user) == ("abc", "+33612345678", "+33170000100")


def test_audio_conversions_round_trip_pyvoip_unsigned_8bit() -> None:
    u8 = bytes([0, 64, 128, 192, 255])
    pcm = np.frombuffer(wire.u8_to_pcm16(u8), dtype="<i2")
    assert pcm.tolist() == [-32768, -16384, 0, 16384, 32512]
    assert wire.pcm16_to_u8(pcm) == u8
    assert len(wire.resample(np.zeros(16000, dtype=np.int16), 16000)) == 8000


@pytest.mark.parametrize(("sdp", "ok"), [
    ("v=0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n", True),
    ("v=0\r\nm=audio 4000 RTP/AVP 8\r\n", True),
    ("v=0\r\nm=audio 4000 RTP/AVP 96\r\na=rtpmap:96 pcma/8000\r\n", True),
    ("v=0\r\nm=audio 4000 RTP/AVP 18 101\r\na=rtpmap:18 G729/8000\r\n", False),
    ("", False),
])
def test_g711_offer_detection(sdp: str, ok: bool) -> None:
    assert wire.offers_g711(sdp) is ok


def test_488_answers_the_invite_in_its_transaction() -> None:
    invite = load("invite_from_customer.sip")
    resp = wire.parse(wire.not_acceptable(invite, "t1").encode())
    assert (resp.status, resp.cseq, resp.to_tag) == (488, (1, "INVITE"), "t1")
    assert resp.headers["via"] == invite.headers["via"]
