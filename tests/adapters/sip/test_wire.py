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


@pytest.mark.parametrize(("status", "cause"), [(486, "busy"), (600, "busy"), (603, "busy"), (480, "no_answer"),
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


# ---- what real devices send ------------------------------------------------------------

def _invite(*headers: str, body: str = "") -> wire.SipMessage:
    head = "\r\n".join(("INVITE sip:1001@h SIP/2.0", "Call-ID: c1", "CSeq: 1 INVITE",
                        "To: <sip:+33170000100@h>", *headers))
    return wire.parse(f"{head}\r\n\r\n{body}".encode())


def test_display_names_that_look_like_uris_are_skipped() -> None:
    assert wire.uri_user('"sip:evil@x" <sip:+33612345678@h>;tag=1') == "+33612345678"
    assert wire.uri_user('"Bob \\"<sip:1002@x>\\"" <sip:1003@h>') == "1003"
    assert wire.uri_user("<sip:%2B33612345678@h;user=phone>") == "+33612345678"


def test_asserted_identity_is_the_caller_and_from_the_fallback() -> None:
    """RFC 3325: a trunk's From is anonymous or a routing address under Privacy: id."""
    anon = 'From: "Anonymous" <sip:anonymous@anonymous.invalid>;tag=1'
    pai = _invite(anon, "Privacy: id", 'P-Asserted-Identity: "Customer" <sip:0612345678@gw>, <tel:+33612345678>')
    assert wire.caller_user(pai) == "0612345678"
    assert wire.inbound_events(pai, CTX, NOW)[0].from_number == "+33612345678"
    tel_first = _invite(anon, "P-Asserted-Identity: <sip:trunk@gw>", "P-Asserted-Identity: <tel:+33612345678>")
    assert wire.caller_user(tel_first) == "+33612345678"  # a number rather than a name
    rpid = _invite(anon, 'Remote-Party-ID: <sip:0170000100@gw>;party=called',
                   'Remote-Party-ID: "C" <sip:+33612345678@gw>;party=calling;privacy=full')
    assert wire.caller_user(rpid) == "+33612345678"
    assert wire.inbound_events(_invite(anon), CTX, NOW)[0].from_number == "anonymous"
    assert wire.caller_user(_invite("From: <sip:0612345678@gw>;tag=1")) == "0612345678"


def test_canonical_respells_what_pyvoip_cannot_parse() -> None:
    """RFC 3261 7.3: compact and lower-case names, no space after the colon, folded lines,
    comma-separated Vias, a scheme in capitals; bare LF line ends (tolerated)."""
    raw = (b"INVITE sip:1001@h SIP/2.0\ni: abc\n"
           b"v: SIP/2.0/UDP 10.0.0.1:5060 ; branch=z9hG4bK1, SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bK2\n"
           b'f:"Sales: Paris" <SIP:+33612345678@h> ; TAG=1\nt: <sip:1001@h>\ncseq:1 INVITE\n'
           b"m: <sip:x@10.0.0.1>\nSubject: a\n  folded\nc: application/sdp\nl: 0\n\n"
           b"v=0\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/AVP 0\n")
    import pyVoIP.VoIP  # noqa: F401 - pyVoIP.SIP imports only after it
    from pyVoIP.SIP import SIPMessage

    from cti.adapters.sip.adapter import _tolerant_message_class

    canon = wire.canonical(raw)
    m = _tolerant_message_class()(canon)
    assert m.headers["Call-ID"] == "abc" and m.headers["CSeq"] == {"check": "1", "method": "INVITE"}
    assert [v["branch"] for v in m.headers["Via"]] == ["z9hG4bK1", "z9hG4bK2"]
    assert (m.headers["From"]["number"], m.headers["From"]["tag"]) == ("+33612345678", "1")
    assert m.body["m"][0]["port"] == 4000
    assert wire.parse(canon).header("subject") == "a folded"
    assert wire.canonical(canon) == canon
    with pytest.raises(ValueError, match="unpack"):  # what pyVoIP's parser does with the original
        SIPMessage(raw)


def test_canonical_keeps_recorded_messages_as_they_were() -> None:
    for path in FIX.glob("*.sip"):
        raw = path.read_bytes()
        before, after = wire.parse(raw), wire.parse(wire.canonical(raw))
        assert (after.headers, after.body) == (before.headers, before.body), path.name


def test_pyvoip_reads_a_tel_from_and_keeps_its_text_for_its_replies() -> None:
    from cti.adapters.sip.adapter import _tolerant_message_class

    raw = (b"INVITE sip:1001@h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n"
           b"From: <tel:+33612345678>;tag=9\r\nTo: <sips:1001@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n")
    m = _tolerant_message_class()(wire.canonical(raw))
    assert m.headers["From"] == {"raw": "<tel:+33612345678>", "tag": "9", "address": "+33612345678",
                                 "number": "+33612345678", "caller": "", "host": ""}
    assert m.headers["To"]["raw"] == "<sips:1001@h>"


def test_sdp_is_taken_out_of_a_multipart_body() -> None:
    """RFC 3204: a SIP-I trunk sends SDP + ISUP in multipart/mixed; pyVoIP reads SDP only."""
    body = ("--b1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\nm=audio 4000 RTP/AVP 8\r\n\r\n"
            "--b1\r\nContent-Type: application/isup;version=itu-t92+\r\n\r\n\x01\x02\r\n--b1--\r\n")
    raw = ("INVITE sip:1001@h SIP/2.0\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
           f"Content-Type: multipart/mixed;boundary=b1\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()
    m = wire.parse(wire.canonical(raw))
    assert m.header("content-type") == "application/sdp" and wire.offers_g711(m.body)
    assert m.body == "v=0\r\nm=audio 4000 RTP/AVP 8\r\n"


@pytest.mark.parametrize(("method", "status"), [("OPTIONS", 200), ("NOTIFY", 405), ("INFO", 405),
                                                ("INVITE", None), ("ACK", None), ("BYE", None)])
def test_requests_pyvoip_does_not_know_are_answered(method: str, status: int | None) -> None:
    """RFC 3261 11.2 (OPTIONS: a PBX's keepalive to the contact) and 8.2.1 (405 + Allow)."""
    req = wire.parse(f"{method} sip:1001@h SIP/2.0\r\nVia: SIP/2.0/UDP p:5060;branch=z9hG4bKp\r\n"
                     f"Via: SIP/2.0/UDP a:5070;branch=z9hG4bKa\r\nFrom: <sip:pbx@h>;tag=f\r\n"
                     f"To: <sip:1001@h>\r\nCall-ID: q1\r\nCSeq: 7 {method}\r\n\r\n".encode())
    reply = wire.answer_other_request(req, "mytag")
    if status is None:
        assert reply is None
        return
    resp = wire.parse(reply.encode())
    assert (resp.status, resp.cseq, resp.to_tag, resp.call_id) == (status, (7, method), "mytag", "q1")
    assert resp.headers["via"] == req.headers["via"] and "OPTIONS" in resp.header("allow")


# ---- digest authentication ---------------------------------------------------------------

def _md5(text: str) -> str:
    import hashlib

    return hashlib.md5(text.encode()).hexdigest()


def test_digest_response_with_qop_auth_follows_rfc_2617() -> None:
    """RFC 2617 3.2.2.1, computed here from the formulas: KD(HA1, nonce:nc:cnonce:qop:HA2)."""
    challenge = wire.Challenge(realm="cti.test", nonce="abc123", qop=("auth", "auth-int"))
    ha1 = _md5("1001:cti.test:secret")
    ha2 = _md5("INVITE:sip:+33612345678@10.0.0.1")
    expected = _md5(f"{ha1}:abc123:00000001:0a1b2c:auth:{ha2}")
    got = wire.digest_response(challenge, "1001", "secret", "INVITE", "sip:+33612345678@10.0.0.1",
                               cnonce="0a1b2c", nc=1)
    assert got == expected


def test_digest_response_without_qop_is_rfc_2069_style() -> None:
    challenge = wire.Challenge(realm="cti.test", nonce="abc123")
    ha1, ha2 = _md5("1001:cti.test:secret"), _md5("REGISTER:sip:10.0.0.1")
    assert wire.digest_response(challenge, "1001", "secret", "REGISTER", "sip:10.0.0.1") == \
        _md5(f"{ha1}:abc123:{ha2}")


def test_digest_response_with_sha_256() -> None:
    import hashlib

    def sha(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    challenge = wire.Challenge(realm="r", nonce="n", algorithm="SHA-256", qop=("auth",))
    ha1, ha2 = sha("1001:r:pw"), sha("REGISTER:sip:h")
    assert wire.digest_response(challenge, "1001", "pw", "REGISTER", "sip:h", cnonce="c", nc=2) == \
        sha(f"{ha1}:n:00000002:c:auth:{ha2}")


def test_challenge_with_quoted_commas_stale_and_qop_list_is_parsed() -> None:
    c = wire.parse_challenge('Digest realm="Sales, Paris", nonce="a,b=c", opaque="x\\"y", '
                             'qop="auth,auth-int", stale=TRUE, algorithm=MD5')
    assert c == wire.Challenge(realm="Sales, Paris", nonce="a,b=c", algorithm="MD5",
                               qop=("auth", "auth-int"), opaque='x"y', stale=True)
    assert wire.parse_challenge('Basic realm="x"') is None


def test_challenge_of_a_407_is_answered_in_proxy_authorization() -> None:
    raw = ("SIP/2.0 407 Proxy Authentication Required\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\n"
           "Call-ID: c\r\nCSeq: 1 INVITE\r\n"
           'Proxy-Authenticate: Digest realm="r", nonce="n1", algorithm=SHA-512-256\r\n'
           'proxy-authenticate: Digest realm="r", nonce="n2", qop="auth"\r\n\r\n')
    c = wire.challenge_of(wire.parse(raw.encode()))
    assert c is not None and (c.nonce, c.proxy, c.answer_header) == ("n2", True, "Proxy-Authorization")
    www = ("SIP/2.0 401 Unauthorized\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n"
           'www-authenticate: Digest realm="r", nonce="n3", stale=false\r\n\r\n')
    c = wire.challenge_of(wire.parse(www.encode()))
    assert c is not None and (c.nonce, c.stale, c.answer_header) == ("n3", False, "Authorization")


def test_credentials_carry_the_request_uri_qop_cnonce_nc_and_opaque() -> None:
    challenge = wire.Challenge(realm="r", nonce="n", qop=("auth",), opaque="o")
    value = wire.credentials(challenge, "1001", "pw", "INVITE", "sip:+331@h", cnonce="cc", nc=1)
    resp = wire.digest_response(challenge, "1001", "pw", "INVITE", "sip:+331@h", cnonce="cc", nc=1)
    assert value == (f'Digest username="1001", realm="r", nonce="n", uri="sip:+331@h", response="{resp}", '
                     'algorithm=MD5, opaque="o", qop=auth, cnonce="cc", nc=00000001')


def test_authorized_retry_is_a_new_transaction_with_the_credentials() -> None:
    request = ("REGISTER sip:h SIP/2.0\r\nVia: SIP/2.0/UDP me:5060;branch=z9hG4bKold;rport\r\n"
               "Call-ID: c\r\nCSeq: 7 REGISTER\r\nAuthorization: Digest old\r\nContent-Length: 0\r\n\r\n")
    retry = wire.parse(wire.authorized_retry(request, "Authorization", "Digest new", "z9hG4bKnew", 8).encode())
    assert retry.header("via") == "SIP/2.0/UDP me:5060;branch=z9hG4bKnew;rport"
    assert retry.cseq == (8, "REGISTER") and retry.headers["authorization"] == ["Digest new"]
    assert retry.uri == "sip:h" and retry.call_id == "c"
