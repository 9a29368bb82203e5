"""FreeSwitchAdapter behaviour beyond the conformance scenarios: replay determinism, bad
frames, auth failure, monitor failures, unsupported commands, mode switch, voicemail drop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from cti.adapters.base import (
    AdapterError,
    Answer,
    AttendedTransfer,
    CallNotFound,
    Connect,
    Monitor,
    Play,
    Record,
    SendDtmf,
    Unsupported,
    VoicemailDrop,
)
from cti.adapters.freeswitch import wire
from cti.metrics import Metrics
from cti.model import EventKind
from tests.adapters.freeswitch.fake_esl import Behaviour, FakeESL
from tests.adapters.freeswitch.harness import eventually, make_adapter, running
from tests.conformance.scenarios import normalize

pytestmark = pytest.mark.timeout(30)
FIX = Path(__file__).parent / "fixtures"


async def _replay() -> list:  # type: ignore[type-arg]
    """Feed the recorded stream (each event twice) to an adapter that is not connected."""
    adapter = make_adapter(9)
    frames = wire.FrameParser().feed((FIX / "inbound_full.json.esl").read_bytes())
    for f in frames:
        for _ in range(2):
            await adapter._apply(wire.parse_event(f))
    out = []
    while not adapter._out.empty():
        out.append(adapter._out.get_nowait())
    return out


async def test_replayed_and_duplicated_wire_events_yield_the_same_event_ids() -> None:
    first, second = await _replay(), await _replay()
    assert [e.event_id for e in first] == [e.event_id for e in second]
    kinds = [e.kind for e in first]
    # the agent legs are not ours in a fresh adapter, so the call is seen from the caller's leg only
    assert kinds[:2] == [EventKind.CREATED, EventKind.QUEUED]
    assert kinds.count(EventKind.ENDED) == 1 and kinds.count(EventKind.HELD) == 1
    assert kinds[-2:] == [EventKind.ENDED, EventKind.RECORDING_READY]
    assert first[0].seq > 0 and first[0].from_number == "+33612345678"


async def test_bad_frames_are_logged_counted_and_survived() -> None:
    async with running() as (fake, adapter, col):
        adapter.metrics = Metrics()
        with capture_logs() as logs:
            fake.send_raw(b"Content-Type: text/event-json\nContent-Length: 9\n\n{not json")
            fake.send_raw(b"Content-Type: text/event-json\nContent-Length: 18\n\n{\"Unique-ID\": \"x\"}")
            fake.send_raw(b"Content-Type: text/weird\n\n")
            u = fake.incoming("0612345678", "0170000100")
            await col.wait(lambda e: e.provider_call_id == u and e.kind is EventKind.QUEUED)
        errors = [entry for entry in logs if entry["event"] == "esl_wire_error"]
        assert len(errors) == 3 and errors[0]["provider"] == "fs" and "{not json" in errors[0]["snippet"]
        assert adapter.metrics.wire_errors.labels("fs")._value.get() == 3
        assert adapter.ready and adapter.connections == 1


async def test_wrong_password_never_gets_ready_and_keeps_retrying() -> None:
    fake = FakeESL(password="right")
    await fake.start()
    adapter = make_adapter(fake.port, password="wrong")
    try:
        with capture_logs() as logs:
            await adapter.start()
            assert await eventually(lambda: sum(e["event"] == "esl_disconnected" for e in logs) >= 2)
        assert not adapter.ready
        assert "refused the password" in next(e for e in logs if e["event"] == "esl_disconnected")["error"]
        assert not any("wrong" in str(e) for e in logs), "the password never appears in logs"
    finally:
        await adapter.stop()
        await fake.close()


async def test_unsupported_commands_raise() -> None:
    adapter = make_adapter(9)
    with pytest.raises(Unsupported, match="answer"):
        await adapter.execute(Answer("x", "alice"))
    with pytest.raises(Unsupported, match="takeover"):
        await adapter.execute(Monitor("x", "user/sam", "takeover"))


async def _answered(fake, adapter, col):  # type: ignore[no-untyped-def]
    u = fake.incoming("0612345678", "0170000100")
    q = await col.kind(EventKind.QUEUED)
    await adapter.execute(Connect(u, (("alice", "user/alice"),)))
    await col.kind(EventKind.ANSWERED, q.call_id)
    return u, q.call_id


async def test_monitor_with_unregistered_supervisor_leaves_nothing_behind() -> None:
    async with running() as (fake, adapter, col):
        u, call_id = await _answered(fake, adapter, col)
        res = await adapter.execute(Monitor(u, "user/nobody", "whisper"))
        assert await eventually(lambda: not adapter._monitors)
        assert not fake.eavesdroppers()
        assert not [e for e in col.of(call_id) if e.kind is EventKind.MONITOR_STARTED]
        with pytest.raises(CallNotFound):
            await adapter.execute(Monitor(u, "user/nobody", "stop", session_id=res.session_id))


async def test_monitor_switches_mode_with_eavesdrop_dtmf() -> None:
    async with running() as (fake, adapter, col):
        u, call_id = await _answered(fake, adapter, col)
        res = await adapter.execute(Monitor(u, "user/sam", "listen"))
        await col.kind(EventKind.MONITOR_STARTED, call_id)
        await adapter.execute(Monitor(u, "user/sam", "barge", session_id=res.session_id))
        assert fake.recv_dtmf == [(f"cti-s-{res.session_id}", "3")]
        await col.wait(lambda e: e.kind is EventKind.MONITOR_STARTED and e.data["mode"] == "barge")
        fake.hangup(u)
        await col.wait(lambda e: e.kind is EventKind.MONITOR_STOPPED and e.data["mode"] == "barge")
        assert await eventually(lambda: not fake.channels)


async def test_voicemail_drop_plays_then_ends_the_call_as_voicemail() -> None:
    async with running() as (fake, adapter, col):
        u, call_id = await _answered(fake, adapter, col)
        await adapter.execute(VoicemailDrop(u, "/sounds/followup.wav"))
        ended = await col.kind(EventKind.ENDED, call_id)
        assert ended.data["cause"] == "voicemail"


async def test_commands_fail_clearly_for_unknown_calls_and_while_disconnected() -> None:
    async with running() as (fake, adapter, _col):
        with pytest.raises(CallNotFound):
            await adapter.execute(Connect("nope", (("alice", "user/alice"),)))
        await fake.close()
        assert await eventually(lambda: not adapter.ready)
        with pytest.raises(AdapterError, match="not connected"):
            await adapter.execute(Connect("nope", (("alice", "user/alice"),)))
        await asyncio.sleep(0)


async def test_attended_transfer_consults_then_hands_the_customer_to_the_target() -> None:
    async with running() as (fake, adapter, col):
        u, call_id = await _answered(fake, adapter, col)
        fake.endpoints["user/bob"] = Behaviour("answer", 0.02)
        res = await adapter.execute(AttendedTransfer(u, "user/bob", "consult"))
        leg = res.detail["consult_leg"]
        await col.kind(EventKind.HELD, call_id)
        assert await eventually(lambda: leg in fake.channels and fake.channels[leg].bridged is not None)
        assert fake.channels[u].variables["park_after_bridge"] == "true"
        await adapter.execute(AttendedTransfer(u, "user/bob", "complete"))
        moved = await col.kind(EventKind.TRANSFERRED, call_id)
        assert moved.agent == "bob" and fake.channels[u].bridged == leg
        assert await eventually(lambda: not [c for c in fake.channels if c.startswith("cti-a-")])
        fake.hangup(u)
        ended = await col.kind(EventKind.ENDED, call_id)
        assert ended.data["cause"] == "normal" and ended.agent == "bob"
        assert [s[0] for s in normalize(col.of(call_id))] == [
            "created", "queued", "ringing", "answered", "held", "resumed", "transferred", "ended"]
        assert await eventually(lambda: not fake.channels)


async def test_attended_transfer_cancel_bridges_the_agent_back() -> None:
    async with running() as (fake, adapter, col):
        u, call_id = await _answered(fake, adapter, col)
        fake.endpoints["user/bob"] = Behaviour("answer", 0.02)
        res = await adapter.execute(AttendedTransfer(u, "user/bob", "consult"))
        leg = res.detail["consult_leg"]
        assert await eventually(lambda: leg in fake.channels and fake.channels[leg].bridged is not None)
        agent_leg = next(c for c in fake.channels if c.startswith("cti-a-"))
        await adapter.execute(AttendedTransfer(u, "user/bob", "cancel"))
        await col.kind(EventKind.RESUMED, call_id)
        assert await eventually(lambda: leg not in fake.channels and fake.channels[u].bridged == agent_leg)
        assert not [e for e in col.of(call_id) if e.kind in (EventKind.TRANSFERRED, EventKind.ENDED)]


@pytest.mark.parametrize("mode, hears", [
    ("listen", set()), ("whisper", {"target"}), ("barge", {"target", "peer"}),
])
async def test_monitor_mode_reaches_the_right_ears(mode: str, hears: set[str]) -> None:
    """eavesdrop_whisper_aleg mixes the supervisor into what the agent sends (the customer
    hears it), eavesdrop_whisper_bleg into what the agent hears: whisper is for the agent only."""
    async with running() as (fake, adapter, col):
        u, call_id = await _answered(fake, adapter, col)
        res = await adapter.execute(Monitor(u, "user/sam", mode))
        await col.kind(EventKind.MONITOR_STARTED, call_id)
        assert fake.hear_eavesdropper(f"cti-s-{res.session_id}") == hears


async def test_monitor_mode_switch_matches_starting_in_that_mode() -> None:
    async with running() as (fake, adapter, col):
        u, call_id = await _answered(fake, adapter, col)
        res = await adapter.execute(Monitor(u, "user/sam", "listen"))
        await col.kind(EventKind.MONITOR_STARTED, call_id)
        sup = f"cti-s-{res.session_id}"
        for mode, hears in (("whisper", {"target"}), ("barge", {"target", "peer"}), ("listen", set())):
            await adapter.execute(Monitor(u, "user/sam", mode, session_id=res.session_id))
            assert fake.hear_eavesdropper(sup) == hears, mode


async def test_supervisor_mode_digits_are_not_call_dtmf() -> None:
    """uuid_recv_dtmf makes FreeSWITCH fire DTMF events on the supervisor's leg; they are our
    own eavesdrop commands, not digits anyone on the call pressed."""
    async with running() as (fake, adapter, col):
        u, call_id = await _answered(fake, adapter, col)
        res = await adapter.execute(Monitor(u, "user/sam", "listen"))
        await col.kind(EventKind.MONITOR_STARTED, call_id)
        await adapter.execute(Monitor(u, "user/sam", "whisper", session_id=res.session_id))
        fake.press(u, "7")  # the customer's digit still comes through
        dtmf = await col.kind(EventKind.DTMF, call_id)
        await asyncio.sleep(0.05)
        assert dtmf.data["digit"] == "7"
        assert [e.data["digit"] for e in col.of(call_id) if e.kind is EventKind.DTMF] == ["7"]


@pytest.mark.parametrize("command", [
    lambda u: Record(u, "start"), lambda u: SendDtmf(u, "1"), lambda u: Play(u, "/sounds/x.wav"),
])
async def test_a_channel_gone_on_the_switch_is_call_not_found(command) -> None:  # type: ignore[no-untyped-def]
    """mod_commands words "no such channel" differently per command (`Cannot locate session!`,
    `invalid uuid`): each is the call being gone, not a provider failure."""
    async with running() as (fake, adapter, col):
        u, _call_id = await _answered(fake, adapter, col)
        del fake.channels[u]  # hung up on the switch; its events have not reached us yet
        with pytest.raises(CallNotFound):
            await adapter.execute(command(u))


async def test_our_recordings_are_stereo_and_say_the_customer_is_on_the_left() -> None:
    """RECORD_STEREO on the customer's leg: its read side (the customer) is the left channel,
    what it hears (the agent) the right. recording_ready says so, or the transcript would give
    the agent's words to the customer."""
    async with running() as (fake, adapter, col):
        u, call_id = await _answered(fake, adapter, col)
        res = await adapter.execute(Record(u, "start"))
        path = res.detail["recording"]
        assert fake.recordings_stereo[path] is True  # set before uuid_record started
        fake.hangup(u)
        ready = await col.kind(EventKind.RECORDING_READY, call_id)
        assert ready.data["path"] == path and ready.data["channel_roles"] == ["customer", "agent"]


async def test_record_stereo_false_keeps_mono_recordings_without_channel_roles() -> None:
    async with running(record_stereo="false") as (fake, adapter, col):
        u, call_id = await _answered(fake, adapter, col)
        path = (await adapter.execute(Record(u, "start"))).detail["recording"]
        assert fake.recordings_stereo[path] is False
        fake.hangup(u)
        ready = await col.kind(EventKind.RECORDING_READY, call_id)
        assert "channel_roles" not in ready.data
