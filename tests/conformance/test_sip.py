"""Conformance: the SIP line (pyVoIP) against real peers, Kamailio + sipp, on loopback."""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cti.adapters.base import (
    Answer,
    BlindTransfer,
    Connect,
    Hangup,
    Hold,
    Monitor,
    Originate,
    Record,
    Unsupported,
)
from cti.model import EventKind
from tests.adapters.sip.harness import SipEnv, sip_env
from tests.adapters.sip.peers import AUDIO, Kamailio, kamailio, needs_sip_peers, sipp
from tests.conformance.scenarios import AGENT, CUSTOMER, check

pytestmark = [needs_sip_peers, pytest.mark.sip, pytest.mark.timeout(60)]


@pytest.fixture
def kam(tmp_path: Path) -> Iterator[Kamailio]:
    with kamailio(tmp_path) as k:
        yield k


async def _customer_calls(env: SipEnv, *, talk_ms: int, record: bool = False) -> str:
    async with sipp("uac_media.xml", env.target, tmp_path=env.tmp_path, keys=env.customer_keys(),
                    subst={"AUDIO": str(AUDIO), "TALK_MS": str(talk_ms)}) as run:
        ring = await env.wait_for(EventKind.RINGING)
        sid = ring.provider_call_id
        await env.adapter.execute(Answer(sid, AGENT))
        if record:
            await env.wait_for(EventKind.ANSWERED, sid)
            await env.adapter.execute(Record(sid, "start"))
            await _sleep(1.5)
            await env.adapter.execute(Record(sid, "stop"))
        result = await run.wait()
        assert result.rc == 0, result.output
        await env.wait_for(EventKind.ENDED, sid)
    return sid


async def _sleep(s: float) -> None:
    import asyncio

    await asyncio.sleep(s)


async def test_inbound_answered(kam: Kamailio, tmp_path: Path) -> None:
    async with sip_env(kam, tmp_path) as env:
        sid = await _customer_calls(env, talk_ms=800)
        created = env.of_call(sid)[0]
        assert (created.from_number, created.to_number) == (CUSTOMER, "+33170000100")
        check("inbound_answered", env.of_call(sid))


async def test_inbound_auto_answered(kam: Kamailio, tmp_path: Path) -> None:
    async with sip_env(kam, tmp_path, auto_answer=True) as env, \
            sipp("uac_media.xml", env.target, tmp_path=tmp_path, keys=env.customer_keys(),
                 subst={"AUDIO": str(AUDIO), "TALK_MS": "500"}) as run:
        assert (await run.wait()).rc == 0
        ended = await env.wait_for(EventKind.ENDED)
        check("inbound_answered", env.of_call(ended.provider_call_id))


async def test_inbound_not_answered(kam: Kamailio, tmp_path: Path) -> None:
    """The customer hangs up (CANCEL) while alice's line rings: 487 goes back, call abandoned."""
    async with sip_env(kam, tmp_path) as env, \
            sipp("uac_cancel.xml", env.target, tmp_path=tmp_path, keys=env.customer_keys(),
                 subst={"RING_MS": "700"}) as run:
        result = await run.wait()
        assert result.rc == 0, result.output  # sipp got its 200 for the CANCEL and the 487
        ended = await env.wait_for(EventKind.ENDED)
        check("inbound_not_answered", env.of_call(ended.provider_call_id))


async def _click_to_call(env: SipEnv, scenario: str) -> str:
    async with sipp(scenario, "", tmp_path=env.tmp_path, local_port=env.kam.gateway_port) as run:
        await _sleep(0.2)  # sipp UAS binds its port
        result = await env.adapter.execute(Originate(f"sip:{env.adapter._username}", CUSTOMER,
                                                     call_id="c2c-sip-1", agent=AGENT))
        sid = result.provider_call_id
        assert sid is not None
        if scenario == "uas_answer.xml":
            await env.wait_for(EventKind.ANSWERED, sid)
            await _sleep(0.3)
            await env.adapter.execute(Hangup(sid))
        out = await run.wait()
        assert out.rc == 0, out.output
        await env.wait_for(EventKind.ENDED, sid)
    assert {e.call_id for e in env.of_call(sid)} == {"c2c-sip-1"}
    return sid


async def test_click_to_call_answered(kam: Kamailio, tmp_path: Path) -> None:
    async with sip_env(kam, tmp_path) as env:
        sid = await _click_to_call(env, "uas_answer.xml")
        check("click_to_call_answered", env.of_call(sid))


async def test_busy(kam: Kamailio, tmp_path: Path) -> None:
    """The far end answers 486: pyVoIP ignores it, the adapter ACKs it and ends the call busy."""
    async with sip_env(kam, tmp_path) as env:
        sid = await _click_to_call(env, "uas_busy.xml")
        check("busy", env.of_call(sid))


async def test_recording_ready(kam: Kamailio, tmp_path: Path) -> None:
    async with sip_env(kam, tmp_path) as env:
        sid = await _customer_calls(env, talk_ms=3000, record=True)
        ready = await env.wait_for(EventKind.RECORDING_READY, sid)
        check("recording_ready", env.of_call(sid))
        path = Path(ready.data["path"])
        assert path.parent == tmp_path / "rec" / "line1"
        with wave.open(str(path)) as w:
            assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (8000, 2, 1)
            frames = w.readframes(w.getnframes())
        seconds = len(frames) / 2 / 8000
        assert 1.0 <= seconds <= 2.0, seconds
        samples = np.frombuffer(frames, dtype="<i2").astype(np.float64)
        assert np.sqrt(np.mean(samples**2)) > 300  # the customer's voice, not silence


@pytest.mark.parametrize(("scenario", "command"), [
    ("caller_hangup_while_queued", Connect("x", (("alice", "sip:1001"),))),
    ("hold_unhold", Hold("x")),
    ("blind_transfer", BlindTransfer("x", "+33100000000")),
    ("supervisor_whisper", Monitor("x", "sip:1002", "whisper")),
])
async def test_scenarios_a_sip_line_cannot_do_raise_unsupported(scenario: str, command, tmp_path: Path) -> None:
    from cti.adapters.base import AdapterContext
    from cti.adapters.sip.adapter import SipAdapter
    from cti.config import ProviderSettings

    adapter = SipAdapter(ProviderSettings(name="line1", type="sip", registrar="127.0.0.1", username="1001"),
                         AdapterContext(storage_dir=str(tmp_path)))
    with pytest.raises(Unsupported, match="sip adapter does not support"):
        await adapter.execute(command)
