"""FreeSWITCH (ESL) adapter through every conformance scenario, against the fake event socket
over real loopback TCP."""

from __future__ import annotations

import uuid

import pytest

from cti.adapters.base import BlindTransfer, Connect, Hangup, Hold, Monitor, Originate, Record, Unhold
from cti.model import EventKind
from tests.adapters.freeswitch.fake_esl import Behaviour
from tests.adapters.freeswitch.harness import eventually, running
from tests.conformance.scenarios import check

pytestmark = pytest.mark.timeout(30)

CALLER_RAW = "0612345678"     # what the trunk presents (national format)
DIALLED_RAW = "0170000100"


async def _inbound_answered(fake, adapter, col):  # type: ignore[no-untyped-def]
    ch = fake.incoming(CALLER_RAW, DIALLED_RAW)
    queued = await col.kind(EventKind.QUEUED)
    await adapter.execute(Connect(ch, (("alice", "user/alice"),), timeout_s=5))
    await col.kind(EventKind.ANSWERED, queued.call_id)
    return ch, queued.call_id


async def test_inbound_answered() -> None:
    async with running() as (fake, adapter, col):
        ch, call_id = await _inbound_answered(fake, adapter, col)
        fake.hangup(ch)
        await col.kind(EventKind.ENDED, call_id)
        check("inbound_answered", col.of(call_id))
        assert col.of(call_id)[0].from_number == "+33612345678"


async def test_inbound_not_answered() -> None:
    async with running() as (fake, adapter, col):
        ch = fake.incoming(CALLER_RAW, DIALLED_RAW)
        queued = await col.kind(EventKind.QUEUED)
        fake.endpoints["user/alice"] = Behaviour("noanswer")
        await adapter.execute(Connect(ch, (("alice", "user/alice"),), timeout_s=1))
        await col.kind(EventKind.NO_ANSWER, queued.call_id)
        fake.hangup(ch)
        await col.kind(EventKind.ENDED, queued.call_id)
        check("inbound_not_answered", col.of(queued.call_id))


async def test_caller_hangup_while_queued() -> None:
    async with running() as (fake, _adapter, col):
        ch = fake.incoming(CALLER_RAW, DIALLED_RAW)
        queued = await col.kind(EventKind.QUEUED)
        fake.hangup(ch)
        await col.kind(EventKind.ENDED, queued.call_id)
        check("caller_hangup_while_queued", col.of(queued.call_id))


async def test_click_to_call_answered() -> None:
    async with running() as (fake, adapter, col):
        fake.endpoints["sofia/gateway/trunk/+33612345678"] = Behaviour("answer", 0.03)
        call_id = str(uuid.uuid4())
        res = await adapter.execute(Originate("user/alice", "+33612345678", call_id, agent="alice"))
        await col.kind(EventKind.ANSWERED, call_id)
        await adapter.execute(Hangup(res.provider_call_id or ""))
        await col.kind(EventKind.ENDED, call_id)
        check("click_to_call_answered", col.of(call_id))
        assert await eventually(lambda: not fake.channels)


async def test_busy() -> None:
    async with running() as (fake, adapter, col):
        fake.endpoints["sofia/gateway/trunk/+33612345678"] = Behaviour("busy", 0.03)
        call_id = str(uuid.uuid4())
        await adapter.execute(Originate("user/alice", "+33612345678", call_id, agent="alice"))
        await col.kind(EventKind.ENDED, call_id)
        check("busy", col.of(call_id))
        assert await eventually(lambda: not fake.channels), "the agent's leg is hung up when the customer is busy"


async def test_hold_unhold() -> None:
    async with running() as (fake, adapter, col):
        ch, call_id = await _inbound_answered(fake, adapter, col)
        await adapter.execute(Hold(ch))
        await col.kind(EventKind.HELD, call_id)
        await adapter.execute(Unhold(ch))
        await col.kind(EventKind.RESUMED, call_id)
        fake.hangup(ch)
        await col.kind(EventKind.ENDED, call_id)
        check("hold_unhold", col.of(call_id))


async def test_blind_transfer() -> None:
    async with running() as (fake, adapter, col):
        ch, call_id = await _inbound_answered(fake, adapter, col)
        await adapter.execute(BlindTransfer(ch, "+33199999999"))
        ended = await col.kind(EventKind.ENDED, call_id)
        check("blind_transfer", col.of(call_id))
        assert ended.data["cause"] == "transferred"
        assert fake.channels[ch].dest == "+33199999999"  # continued in the dialplan


async def test_recording_ready() -> None:
    async with running() as (fake, adapter, col):
        ch, call_id = await _inbound_answered(fake, adapter, col)
        await adapter.execute(Record(ch, "start"))
        await col.kind(EventKind.RECORDING_STARTED, call_id)
        await adapter.execute(Record(ch, "stop"))
        await col.kind(EventKind.RECORDING_STOPPED, call_id)
        fake.hangup(ch)
        ready = await col.kind(EventKind.RECORDING_READY, call_id)
        check("recording_ready", col.of(call_id))
        assert ready.data["path"].startswith("/recordings/")  # written by FreeSWITCH itself


@pytest.mark.parametrize("ahead_s", [0, 2], ids=["same-clock", "freeswitch-clock-2s-ahead"])
async def test_supervisor_whisper(ahead_s: int) -> None:
    async with running() as (fake, adapter, col):
        # the stop is ordered by us and stamped by our clock: it must still sort after the
        # start FreeSWITCH stamped, whichever clock runs ahead
        fake.skew_us = ahead_s * 1_000_000
        ch, call_id = await _inbound_answered(fake, adapter, col)
        res = await adapter.execute(Monitor(ch, "user/sam", "whisper"))
        await col.kind(EventKind.MONITOR_STARTED, call_id)
        assert len(fake.eavesdroppers()) == 1
        await adapter.execute(Monitor(ch, "user/sam", "stop", session_id=res.session_id))
        await col.kind(EventKind.MONITOR_STOPPED, call_id)
        fake.hangup(ch)
        await col.kind(EventKind.ENDED, call_id)
        check("supervisor_whisper", col.of(call_id))
        assert await eventually(lambda: not fake.eavesdroppers() and not fake.channels)
