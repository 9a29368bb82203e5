"""SIP line adapter against Kamailio + sipp: supervision, bad input, playback, capabilities."""

from __future__ import annotations

import asyncio
import socket
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cti.adapters.base import (
    AdapterContext,
    AdapterError,
    Answer,
    CallNotFound,
    Hangup,
    Monitor,
    Originate,
    Unsupported,
    VoicemailDrop,
    adapter_class,
)
from cti.adapters.sip.adapter import SipAdapter
from cti.config import ProviderSettings
from cti.model import EventKind
from tests.adapters.sip.harness import sip_env
from tests.adapters.sip.peers import AUDIO, Kamailio, free_udp_port, kamailio, needs_sip_peers, sipp
from tests.conformance.scenarios import AGENT, CUSTOMER


def _wav_seconds(path: str) -> float:
    with wave.open(path) as w:
        return w.getnframes() / w.getframerate()


def peer_test(fn):
    """A test that runs Kamailio + sipp (skipped where they are not installed)."""
    return pytest.mark.sip(needs_sip_peers(pytest.mark.timeout(60)(fn)))


@pytest.fixture
def kam(tmp_path: Path) -> Iterator[Kamailio]:
    with kamailio(tmp_path) as k:
        yield k


def _adapter(tmp_path: Path, **opts: object) -> SipAdapter:
    base: dict[str, object] = {"registrar": "127.0.0.1", "username": "1001"}
    base.update(opts)
    return SipAdapter(ProviderSettings(name="line1", type="sip", **base), AdapterContext(storage_dir=str(tmp_path)))


def test_registered_as_sip() -> None:
    assert adapter_class("sip") is SipAdapter


@pytest.mark.parametrize(("opts", "message"), [
    ({"registrar": ""}, "registrar"),
    ({"username": ""}, "username"),
    ({"rtp_ports": [20000, 10000]}, "rtp_ports"),
])
def test_bad_config_is_named(tmp_path: Path, opts: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _adapter(tmp_path, **opts)


async def test_monitor_is_unsupported_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(Unsupported, match="sip adapter does not support monitor: a pyVoIP line"):
        await _adapter(tmp_path).execute(Monitor("c1", "sip:1002", "listen"))


async def test_commands_on_unknown_calls_are_call_not_found(tmp_path: Path) -> None:
    with pytest.raises(CallNotFound):
        await _adapter(tmp_path).execute(Hangup("nope@127.0.0.1"))


async def test_originate_while_unregistered_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match="not registered"):
        await _adapter(tmp_path).execute(Originate("sip:1001", CUSTOMER, call_id="c1"))


@pytest.mark.sip
@pytest.mark.timeout(30)
async def test_without_registrar_stays_not_ready_and_stops(tmp_path: Path) -> None:
    """pyVoIP's start() needs a registrar: ready stays false, and stop() does not hang."""
    adapter = _adapter(tmp_path, port=free_udp_port(), sip_port=free_udp_port(), register_timeout=0.3,
                       start_timeout=1, stop_timeout=1)
    await adapter.start()
    await asyncio.sleep(1.5)
    assert adapter.ready is False
    await asyncio.wait_for(adapter.stop(), 10)


@peer_test
async def test_line_reregisters_after_the_registrar_restarts(kam: Kamailio, tmp_path: Path) -> None:
    async with sip_env(kam, tmp_path, register_interval=1, register_timeout=0.3, start_timeout=2) as env:
        kam.stop()
        await env.wait_ready(False, within=15)  # the REGISTER refresh fails: not ready
        await asyncio.sleep(2)  # long enough for pyVoIP to give up; the supervisor rebuilds the phone
        assert env.adapter.ready is False
        kam.start()  # same port, empty location table: only a new REGISTER makes calls reach us
        await env.wait_ready(True, within=20)
        assert env.adapter.counters["reconnects"] >= 1
        async with sipp("uac_media.xml", env.target, tmp_path=tmp_path, keys=env.customer_keys(),
                        subst={"AUDIO": str(AUDIO), "TALK_MS": "300"}) as run:
            ring = await env.wait_for(EventKind.RINGING)
            await env.adapter.execute(Answer(ring.provider_call_id, AGENT))
            assert (await run.wait()).rc == 0
        await env.wait_for(EventKind.ENDED, ring.provider_call_id)


@peer_test
async def test_garbage_datagrams_do_not_stop_the_line(kam: Kamailio, tmp_path: Path) -> None:
    async with sip_env(kam, tmp_path, auto_answer=True) as env:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for junk in (b"\x00\xffnot sip", b"INVITE nonsense\r\n\r\n", b"SIP/2.0 xyz\r\n\r\n"):
                s.sendto(junk, ("127.0.0.1", env.adapter._sip_port))
        await asyncio.sleep(0.2)
        assert env.adapter.ready
        async with sipp("uac_media.xml", env.target, tmp_path=tmp_path, keys=env.customer_keys(),
                        subst={"AUDIO": str(AUDIO), "TALK_MS": "300"}) as run:
            assert (await run.wait()).rc == 0
        ended = await env.wait_for(EventKind.ENDED)
        assert ended.data["cause"] == "normal"


@peer_test
async def test_voicemail_drop_plays_then_hangs_up(kam: Kamailio, tmp_path: Path) -> None:
    clip = tmp_path / "vm.wav"
    tone = (np.sin(np.arange(4000) * 2 * np.pi * 440 / 8000) * 8000).astype(np.int16)
    sf.write(clip, tone, 8000, subtype="ULAW")  # 0.5 s, mu-law like a real prompt
    async with sip_env(kam, tmp_path) as env, \
            sipp("uas_answer.xml", "", tmp_path=tmp_path, local_port=kam.gateway_port) as run:
        await asyncio.sleep(0.2)
        res = await env.adapter.execute(Originate("sip:1001", CUSTOMER, call_id="vm-1", agent=AGENT))
        sid = res.provider_call_id
        await env.wait_for(EventKind.ANSWERED, sid)
        drop = await env.adapter.execute(VoicemailDrop(sid, str(clip)))
        assert drop.detail["duration_s"] == pytest.approx(0.5)
        await env.wait_for(EventKind.PLAYBACK_FINISHED, sid)
        ended = await env.wait_for(EventKind.ENDED, sid)
        assert ended.data["cause"] == "voicemail"
        assert (await run.wait()).rc == 0  # the far end got our BYE


@peer_test
async def test_play_of_a_missing_file_is_an_adapter_error(kam: Kamailio, tmp_path: Path) -> None:
    async with sip_env(kam, tmp_path) as env, \
            sipp("uas_answer.xml", "", tmp_path=tmp_path, local_port=kam.gateway_port) as run:
        await asyncio.sleep(0.2)
        sid = (await env.adapter.execute(Originate("sip:1001", CUSTOMER, call_id="p-1"))).provider_call_id
        await env.wait_for(EventKind.ANSWERED, sid)
        with pytest.raises(AdapterError, match="cannot play"):
            await env.adapter.execute(VoicemailDrop(sid, str(tmp_path / "missing.wav")))
        await env.adapter.execute(Hangup(sid))
        assert (await run.wait()).rc == 0



@peer_test
async def test_stop_during_a_call_reports_its_end_and_recording(kam: Kamailio, tmp_path: Path) -> None:
    async with sip_env(kam, tmp_path, auto_answer=True, auto_record=True) as env:
        async with sipp("uac_media.xml", env.target, tmp_path=tmp_path, keys=env.customer_keys(),
                        subst={"AUDIO": str(AUDIO), "TALK_MS": "8000"}):
            started = await env.wait_for(EventKind.RECORDING_STARTED)
            await asyncio.sleep(1)
            await env.adapter.stop()
    kinds = [e.kind for e in env.of_call(started.provider_call_id)]
    assert kinds[-3:] == [EventKind.ENDED, EventKind.RECORDING_STOPPED, EventKind.RECORDING_READY]
    ready = env.of_call(started.provider_call_id)[-1]
    assert _wav_seconds(ready.data["path"]) >= 0.5  # the second or so before stop was recorded



@peer_test
async def test_caller_key_presses_become_dtmf_events(kam: Kamailio, tmp_path: Path) -> None:
    data = AUDIO.parent
    async with sip_env(kam, tmp_path, auto_answer=True) as env, \
            sipp("uac_dtmf.xml", env.target, tmp_path=tmp_path, keys=env.customer_keys(),
                 subst={"DIGIT1": str(data / "dtmf_2833_1.pcap"), "DIGIT2": str(data / "dtmf_2833_pound.pcap")}) as run:
        assert (await run.wait()).rc == 0
        ended = await env.wait_for(EventKind.ENDED)
    digits = [e.data["digit"] for e in env.of_call(ended.provider_call_id) if e.kind is EventKind.DTMF]
    assert digits == ["1", "#"]


@peer_test
async def test_offer_without_g711_is_refused_with_488(kam: Kamailio, tmp_path: Path) -> None:
    async with sip_env(kam, tmp_path, auto_answer=True) as env, \
            sipp("uac_g729.xml", env.target, tmp_path=tmp_path, keys=env.customer_keys(), limit_s=10) as run:
        result = await run.wait()
        assert result.rc == 0, result.output
        assert env.adapter.counters["refused_codec"] == 1
        assert env.events == []


@peer_test
async def test_unanswered_call_stops_ringing_after_ring_timeout(kam: Kamailio, tmp_path: Path) -> None:
    async with sip_env(kam, tmp_path, ring_timeout=0.8) as env, \
            sipp("uac_unanswered.xml", env.target, tmp_path=tmp_path, keys=env.customer_keys(), limit_s=10) as run:
        result = await run.wait()
        assert result.rc == 0, result.output  # the caller got 480 and ACKed it
        ended = await env.wait_for(EventKind.ENDED)
    steps = [(e.kind.value, e.agent or e.data.get("cause", "")) for e in env.of_call(ended.provider_call_id)]
    assert steps == [("created", ""), ("queued", ""), ("ringing", AGENT), ("no_answer", AGENT),
                     ("ended", "no_answer")]


def test_line_agent_comes_from_the_agents_endpoints(tmp_path: Path) -> None:
    adapter = SipAdapter(ProviderSettings(name="line1", type="sip", registrar="10.0.0.1", username="1001"),
                         AdapterContext(agent_endpoints={"sip:1001": "bob"}, storage_dir=str(tmp_path)))
    assert adapter._agent == "bob"


@peer_test
async def test_paused_audio_is_left_out_of_the_recording(kam: Kamailio, tmp_path: Path) -> None:
    from cti.adapters.base import Record

    async with sip_env(kam, tmp_path, auto_answer=True) as env, \
            sipp("uac_media.xml", env.target, tmp_path=tmp_path, keys=env.customer_keys(),
                 subst={"AUDIO": str(AUDIO), "TALK_MS": "3500"}) as run:
        answered = await env.wait_for(EventKind.ANSWERED)
        sid = answered.provider_call_id
        await env.adapter.execute(Record(sid, "start"))
        await asyncio.sleep(0.8)
        await env.adapter.execute(Record(sid, "pause"))
        await asyncio.sleep(1.2)
        await env.adapter.execute(Record(sid, "resume"))
        await asyncio.sleep(0.6)
        await env.adapter.execute(Record(sid, "stop"))
        assert (await run.wait()).rc == 0
        ready = await env.wait_for(EventKind.RECORDING_READY, sid)
    kinds = [e.kind for e in env.of_call(sid) if e.kind.value.startswith("recording")]
    assert kinds == [EventKind.RECORDING_STARTED, EventKind.RECORDING_PAUSED, EventKind.RECORDING_RESUMED,
                     EventKind.RECORDING_STOPPED, EventKind.RECORDING_READY]
    assert 1.0 <= _wav_seconds(ready.data["path"]) <= 1.9  # 0.8 s + 0.6 s heard, the 1.2 s pause left out


def test_pyvoip_call_finalizer_is_removed_and_finished_calls_ports_still_come_back(tmp_path: Path) -> None:
    """pyVoIP's VoIPCall.__del__ (port release from inside the garbage collector) once ran inside
    Thread.start, under threading's own lock, and hung every later thread start. Building a line
    removes it; pyVoIP still reclaims a finished call's RTP ports when it runs short."""
    import threading

    from pyVoIP.VoIP.VoIP import VoIPCall

    adapter = SipAdapter(ProviderSettings(name="line1", type="sip", registrar="127.0.0.1", username="1001"),
                         AdapterContext(agent_endpoints={"sip:1001": "bob"}, storage_dir=str(tmp_path)))
    phone = adapter._build_phone()
    assert "__del__" not in VoIPCall.__dict__
    # every port taken by a call whose thread has finished: the next request gets one back
    finished = threading.Thread(target=lambda: None)
    finished.start()
    finished.join()
    low, high = phone.rtpPortLow, phone.rtpPortHigh
    phone.assignedPorts = list(range(low, high + 1))
    call = type("Call", (), {"assignedPorts": {p: None for p in range(low, high + 1)}})()
    phone.calls["gone"] = call
    phone.threads.append(finished)
    phone.threadLookup[finished] = "gone"
    assert low <= phone.request_port(blocking=False) <= high


@peer_test
async def test_options_keepalive_from_the_pbx_is_answered(kam: Kamailio, tmp_path: Path) -> None:
    """RFC 3261 11.2: a PBX qualifying the line stops sending it calls if OPTIONS goes unanswered."""
    async with sip_env(kam, tmp_path) as env, \
            sipp("uac_options.xml", env.target, tmp_path=tmp_path, limit_s=8) as run:
        result = await run.wait()
        assert result.rc == 0, result.output
        assert env.adapter.counters["answered_options"] == 1
        assert env.adapter.ready and env.events == []


@peer_test
async def test_trunk_style_call_with_compact_headers_and_asserted_identity(kam: Kamailio, tmp_path: Path) -> None:
    """Compact/lower-case header names, anonymous From + P-Asserted-Identity, tel: To: pyVoIP's
    own parser drops such an INVITE; the line rings, answers and ends it, caller from PAI."""
    async with sip_env(kam, tmp_path, auto_answer=True) as env, \
            sipp("uac_trunk.xml", env.target, tmp_path=tmp_path, keys=env.customer_keys(), limit_s=10) as run:
        result = await run.wait()
        assert result.rc == 0, result.output
        ended = await env.wait_for(EventKind.ENDED)
    created = env.of_call(ended.provider_call_id)[0]
    assert (created.from_number, created.to_number, created.queue) == (CUSTOMER, "+33170000100", "support")
    assert [e.kind for e in env.of_call(ended.provider_call_id)][-2:] == [EventKind.ANSWERED, EventKind.ENDED]
    assert ended.data["cause"] == "normal"


def test_cancel_that_crosses_the_answer_leaves_the_call_up(tmp_path: Path) -> None:
    """RFC 3261 9.2: once the INVITE has its final answer a CANCEL changes nothing (no 487)."""
    from types import SimpleNamespace

    from pyVoIP.VoIP import CallState

    from cti.adapters.sip import wire

    fixtures = Path(__file__).parent / "fixtures"
    cancel = wire.parse((fixtures / "cancel_from_customer.sip").read_bytes())
    sent: list[bytes] = []
    voip = SimpleNamespace(state=CallState.ANSWERED,
                           request=SimpleNamespace(raw=(fixtures / "invite_from_customer.sip").read_bytes()))
    phone = SimpleNamespace(calls={cancel.call_id: voip}, server="127.0.0.1", port=5060,
                            sip=SimpleNamespace(out=SimpleNamespace(sendto=lambda data, addr: sent.append(data)),
                                                tagLibrary={}, gen_tag=lambda: "t1"))
    adapter = _adapter(tmp_path)
    adapter._cancelled(phone, cancel)
    assert (sent, voip.state, cancel.call_id in phone.calls) == ([], CallState.ANSWERED, True)
    voip.state = CallState.RINGING  # still ringing: the INVITE gets its 487
    adapter._cancelled(phone, cancel)
    assert wire.parse(sent[0]).status == 487 and voip.state is CallState.ENDED and not phone.calls


def test_ack_for_a_refusal_has_the_invite_request_uri(tmp_path: Path) -> None:
    """RFC 3261 17.1.1.3: the ACK to a non-2xx final answer carries the INVITE's Request-URI."""
    from types import SimpleNamespace

    from cti.adapters.sip import wire
    from cti.adapters.sip.adapter import _LineCall
    from cti.model import Direction

    busy = wire.parse((Path(__file__).parent / "fixtures" / "busy_486.sip").read_bytes())
    invite = wire.parse(f"INVITE sip:{busy.to_user}@127.0.0.1 SIP/2.0\r\nCall-ID: {busy.call_id}\r\n"
                        "CSeq: 1 INVITE\r\n\r\n".encode())
    sent: list[bytes] = []
    phone = SimpleNamespace(calls={}, server="127.0.0.1", port=5060,
                            sip=SimpleNamespace(out=SimpleNamespace(sendto=lambda data, addr: sent.append(data))))
    adapter = _adapter(tmp_path)
    adapter._calls[busy.call_id] = _LineCall(sid=busy.call_id, direction=Direction.OUTBOUND, invite=invite)
    adapter._rejected(phone, busy)
    ack = wire.parse(sent[0])
    assert (ack.method, ack.uri) == ("ACK", invite.uri)


@peer_test
@pytest.mark.parametrize("mode", ["sendrecv", "sendonly"])
async def test_a_reinvite_in_the_call_is_answered_and_the_call_goes_on(
    kam: Kamailio, tmp_path: Path, mode: str
) -> None:
    """Trunks refresh sessions (RFC 4028) and phones put calls on hold (a=sendonly) with a
    re-INVITE in the dialog: it must get its 200 OK, and the call must go on to its BYE."""
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        async with sip_env(kam, tmp_path, auto_answer=True, auto_record=True) as env:
            async with sipp("uac_reinvite.xml", env.target, tmp_path=tmp_path, keys=env.customer_keys(),
                            subst={"AUDIO": str(AUDIO), "TALK_MS": "1000", "MODE": mode}) as run:
                assert (await run.wait()).rc == 0
            ended = await env.wait_for(EventKind.ENDED)
            ready = await env.wait_for(EventKind.RECORDING_READY)
    assert ended.data["cause"] == "normal"
    assert [e.kind for e in env.of_call(ended.provider_call_id)].count(EventKind.ENDED) == 1
    assert _wav_seconds(ready.data["path"]) >= 1.5  # recorded through the re-INVITE to the BYE
    assert not [e for e in logs if e["event"] in ("sip_datagram_failed", "sip_malformed")]
