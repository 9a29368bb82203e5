"""Digest authentication against a real Kamailio that challenges like a PBX or a trunk:
REGISTER with 401 + qop=auth, INVITE with 407 + qop=auth (scenarios/kam_auth.cfg)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from cti.adapters.base import AdapterContext, AdapterError, Hangup, Originate
from cti.adapters.sip import wire
from cti.adapters.sip.adapter import SipAdapter
from cti.config import ProviderSettings
from cti.model import EventKind
from tests.adapters.sip.harness import sip_env
from tests.adapters.sip.peers import Kamailio, free_udp_port, kamailio, needs_sip_peers, sipp
from tests.conformance.scenarios import AGENT, CUSTOMER


@pytest.fixture(params=["MD5", "SHA-256"])
def auth_kam(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Kamailio]:
    with kamailio(tmp_path, "kam_auth.cfg", ALGORITHM=request.param, REGISTER_PASSWORD="secret",
                  INVITE_PASSWORD="secret") as k:
        yield k


@pytest.mark.sip
@needs_sip_peers
@pytest.mark.timeout(60)
async def test_line_registers_with_401_and_calls_through_a_407(auth_kam: Kamailio, tmp_path: Path) -> None:
    async with sip_env(auth_kam, tmp_path, password="secret") as env, \
            sipp("uas_answer.xml", "", tmp_path=tmp_path, local_port=auth_kam.gateway_port) as run:
        await asyncio.sleep(0.2)  # sipp UAS binds its port
        res = await env.adapter.execute(Originate("sip:1001", CUSTOMER, call_id="auth-1", agent=AGENT))
        sid = res.provider_call_id
        await env.wait_for(EventKind.ANSWERED, sid)
        await env.adapter.execute(Hangup(sid))
        result = await run.wait()
        assert result.rc == 0, result.output  # the callee got the INVITE, then our BYE
        ended = await env.wait_for(EventKind.ENDED, sid)
    assert ended.data["cause"] == "normal"
    log = (tmp_path / "kamailio.log").read_text()
    assert "is not the Request-URI" not in log


@pytest.mark.sip
@needs_sip_peers
@pytest.mark.timeout(60)
async def test_wrong_register_password_leaves_the_line_unregistered_with_a_reason(tmp_path: Path) -> None:
    with kamailio(tmp_path, "kam_auth.cfg", ALGORITHM="MD5", REGISTER_PASSWORD="secret",
                  INVITE_PASSWORD="secret") as kam:
        settings = ProviderSettings(name="line1", type="sip", registrar="127.0.0.1", port=kam.port,
                                    username="1001", password="wrong", sip_port=free_udp_port(),
                                    register_timeout=1, start_timeout=3, stop_timeout=2)
        adapter = SipAdapter(settings, AdapterContext(storage_dir=str(tmp_path)))
        started = time.monotonic()
        await adapter.start()
        try:
            while adapter.counters["auth_refused"] == 0 and time.monotonic() - started < 5:  # noqa: ASYNC110
                await asyncio.sleep(0.02)  # pyVoIP's register thread counts it
            assert adapter.counters["auth_refused"] >= 1  # refused, not waited out
            assert adapter.ready is False
            assert "wrong username or password" in (adapter._auth_error or "")
            with pytest.raises(AdapterError, match="not registered"):
                await adapter.execute(Originate("sip:1001", CUSTOMER, call_id="x"))
        finally:
            await asyncio.wait_for(adapter.stop(), 10)


@pytest.mark.sip
@needs_sip_peers
@pytest.mark.timeout(60)
async def test_call_with_refused_credentials_fails_fast_with_the_reason(tmp_path: Path) -> None:
    with kamailio(tmp_path, "kam_auth.cfg", ALGORITHM="MD5", REGISTER_PASSWORD="secret",
                  INVITE_PASSWORD="trunk-only") as kam:
        async with sip_env(kam, tmp_path, password="secret") as env:
            started = time.monotonic()
            with pytest.raises(AdapterError, match="authentication refused: 407 again"):
                await env.adapter.execute(Originate("sip:1001", CUSTOMER, call_id="auth-2"))
            assert time.monotonic() - started < 2
            assert env.adapter.ready and env.adapter._invites == {}


_INVITE = ("INVITE sip:+33612345678@127.0.0.1 SIP/2.0\r\n"
           "Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKfirst\r\nMax-Forwards: 70\r\n"
           "To: <sip:+33612345678@127.0.0.1>\r\nFrom: <sip:1001@127.0.0.1>;tag=me\r\n"
           "Call-ID: c1@127.0.0.1\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n"
           "Content-Length: 4\r\n\r\nv=0\n")


def _challenge_407(cseq: int, nonce: str, branch: str, stale: bool = False) -> wire.SipMessage:
    extra = ", stale=TRUE" if stale else ""
    return wire.parse((
        f"SIP/2.0 407 Proxy Authentication Required\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch={branch}\r\n"
        "From: <sip:1001@127.0.0.1>;tag=me\r\nTo: <sip:+33612345678@127.0.0.1>;tag=px\r\n"
        f"Call-ID: c1@127.0.0.1\r\nCSeq: {cseq} INVITE\r\n"
        f'Proxy-Authenticate: Digest realm="cti.test", nonce="{nonce}", qop="auth"{extra}\r\n'
        "Content-Length: 0\r\n\r\n").encode())


def test_invite_challenges_are_acked_retried_as_new_transactions_and_stale_is_no_refusal(tmp_path: Path) -> None:
    """407 -> ACK + INVITE (new branch, CSeq+1, Proxy-Authorization); a stale=true 407 ->
    the same with the new nonce; a plain 407 after our credentials -> the call is refused."""
    from cti.adapters.sip.adapter import _PendingInvite

    adapter = SipAdapter(ProviderSettings(name="line1", type="sip", registrar="127.0.0.1", username="1001",
                                          password="secret"), AdapterContext(storage_dir=str(tmp_path)))
    sent: list[wire.SipMessage] = []
    phone = SimpleNamespace(calls={}, server="127.0.0.1", port=5060, sip=SimpleNamespace(
        out=SimpleNamespace(sendto=lambda data, addr: sent.append(wire.parse(data)))))
    pending = _PendingInvite(request=_INVITE, uri="sip:+33612345678@127.0.0.1")
    adapter._invites["c1@127.0.0.1"] = pending

    adapter._invite_challenged(phone, _challenge_407(1, "n1", "z9hG4bKfirst"))
    ack, retry = sent
    assert (ack.method, ack.cseq, ack.uri) == ("ACK", (1, "ACK"), "sip:+33612345678@127.0.0.1")
    assert "branch=z9hG4bKfirst" in ack.header("via")
    assert (retry.method, retry.cseq, retry.call_id) == ("INVITE", (2, "INVITE"), "c1@127.0.0.1")
    assert "z9hG4bKfirst" not in retry.header("via") and retry.header("via").count("branch=z9hG4bK") == 1
    creds = retry.header("proxy-authorization") or ""
    assert 'nonce="n1"' in creds and 'uri="sip:+33612345678@127.0.0.1"' in creds and "qop=auth" in creds
    assert retry.body == "v=0\n" and not pending.settled.is_set()

    sent.clear()  # a retransmission of the first 407 is ACKed again, nothing re-sent
    adapter._invite_challenged(phone, _challenge_407(1, "n1", "z9hG4bKfirst"))
    assert [m.method for m in sent] == ["ACK"]

    sent.clear()
    branch2 = retry.header("via").split("branch=")[1]
    adapter._invite_challenged(phone, _challenge_407(2, "n2", branch2, stale=True))
    ack, retry2 = sent
    assert (ack.cseq, retry2.cseq) == ((2, "ACK"), (3, "INVITE"))
    assert 'nonce="n2"' in (retry2.header("proxy-authorization") or "") and not pending.settled.is_set()

    sent.clear()
    adapter._invite_challenged(phone, _challenge_407(3, "n3", retry2.header("via").split("branch=")[1]))
    assert [m.method for m in sent] == ["ACK"]
    assert pending.settled.is_set() and "authentication refused: 407 again" in (pending.refused or "")
    assert adapter._invites == {}
