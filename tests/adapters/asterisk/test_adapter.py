"""AsteriskAdapter behaviour beyond the conformance scenarios: replay determinism, bad wire
messages, monitor failures (no orphan snoop), unsupported commands, ring-all, voicemail drop."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from cti.adapters.base import (
    AdapterError,
    Answer,
    AttendedTransfer,
    CallNotFound,
    Connect,
    Hold,
    Monitor,
    Originate,
    Record,
    Unhold,
    Unsupported,
    VoicemailDrop,
    adapter_class,
)
from cti.config import ProviderSettings
from cti.metrics import Metrics
from cti.model import EventKind
from tests.adapters.asterisk.fake_ari import Behaviour
from tests.adapters.asterisk.harness import eventually, make_adapter, running
from tests.conformance.scenarios import normalize

pytestmark = pytest.mark.timeout(30)
FIX = Path(__file__).parent / "fixtures"


async def _replay(name: str) -> list:  # type: ignore[type-arg]
    adapter = make_adapter("http://127.0.0.1:9")  # never started: replay needs no connection
    for line in (FIX / name).read_text().splitlines():
        await adapter.handle_message(line)
        await adapter.handle_message(line)  # every wire event delivered twice
    out = []
    while not adapter._queue.empty():
        out.append(adapter._queue.get_nowait())
    return out


async def test_replayed_and_duplicated_wire_events_yield_the_same_event_ids() -> None:
    first, second = await _replay("caller_hangup_while_queued.jsonl"), await _replay("caller_hangup_while_queued.jsonl")
    assert [e.kind for e in first] == [EventKind.CREATED, EventKind.QUEUED, EventKind.ENDED]
    assert [e.event_id for e in first] == [e.event_id for e in second]
    assert first[0].from_number == "+33612345678" and first[0].to_number == "+33170000100"
    assert first[0].queue == "support" and first[0].tenant == "acme"
    assert first[-1].data["cause"] == "caller_hangup"


async def test_registry_builds_the_adapter_and_options_are_validated() -> None:
    assert adapter_class("asterisk").__name__ == "AsteriskAdapter"
    with pytest.raises(ValueError, match="missing option 'app'"):
        adapter_class("asterisk")(ProviderSettings(name="x", type="asterisk", url="http://h", username="u",
                                                   password="p"), None)


async def test_malformed_and_unknown_messages_are_logged_counted_and_survived() -> None:
    async with running() as (fake, adapter, col):
        adapter.metrics = Metrics()
        with capture_logs() as logs:
            fake.send_raw("this is not json")
            fake.send_raw('{"type": "StasisStart"}')
            fake.send_raw('{"type": "SomethingNew", "timestamp": "2026-11-22T09:00:00Z"}')
            ch = fake.incoming("0612345678", "0170000100")
            await col.wait(lambda e: e.provider_call_id == ch and e.kind is EventKind.QUEUED)
        errors = [entry for entry in logs if entry["event"] == "ari_wire_error"]
        assert len(errors) == 2 and errors[0]["provider"] == "pbx" and "this is not json" in errors[0]["snippet"]
        assert adapter.metrics.wire_errors.labels("pbx")._value.get() == 2
        assert adapter.ready


async def test_unsupported_commands_raise_instead_of_doing_nothing() -> None:
    adapter = make_adapter("http://127.0.0.1:9")
    with pytest.raises(Unsupported, match="answer"):
        await adapter.execute(Answer("x", "alice"))


async def _answered(fake, adapter, col):  # type: ignore[no-untyped-def]
    ch = fake.incoming("0612345678", "0170000100")
    q = await col.kind(EventKind.QUEUED)
    await adapter.execute(Connect(ch, (("alice", "PJSIP/alice"),)))
    await col.kind(EventKind.ANSWERED, q.call_id)
    return ch, q.call_id


async def test_monitor_with_unknown_supervisor_endpoint_sets_nothing_up() -> None:
    async with running() as (fake, adapter, col):
        ch, _ = await _answered(fake, adapter, col)
        before = set(fake.channels)
        with pytest.raises(AdapterError):
            await adapter.execute(Monitor(ch, "PJSIP/nobody", "whisper"))
        assert set(fake.channels) == before and not fake.snoops()
        assert not adapter._monitors


async def test_monitor_failing_half_way_removes_its_snoop_bridge_and_supervisor() -> None:
    async with running() as (fake, adapter, col):
        ch, call_id = await _answered(fake, adapter, col)
        fake.fail("POST", r"^/bridges/cti-m-[^/]+/addChannel$", 500)
        with capture_logs() as logs:
            await adapter.execute(Monitor(ch, "PJSIP/sam", "whisper"))
            assert await eventually(lambda: any(e["event"] == "ari_monitor_failed" for e in logs))
        assert await eventually(lambda: not fake.snoops() and not [b for b in fake.bridges if b.startswith("cti-m-")]
                                and not [c for c in fake.channels if c.startswith("cti-s-")])
        assert not [e for e in col.of(call_id) if e.kind is EventKind.MONITOR_STARTED]
        assert not adapter._monitors


async def test_supervisor_who_does_not_answer_leaves_nothing_behind() -> None:
    async with running() as (fake, adapter, col):
        ch, call_id = await _answered(fake, adapter, col)
        fake.endpoints["PJSIP/sam"] = Behaviour("noanswer")
        res = await adapter.execute(Monitor(ch, "PJSIP/sam", "listen"))
        fake.hangup(f"cti-s-{res.session_id}", 19)  # gives up ringing
        assert await eventually(lambda: not adapter._monitors)
        assert not fake.snoops() and not [e for e in col.of(call_id) if e.kind is EventKind.MONITOR_STARTED]


async def test_monitor_switches_from_listen_to_barge_and_stops_when_the_call_ends() -> None:
    async with running() as (fake, adapter, col):
        ch, call_id = await _answered(fake, adapter, col)
        res = await adapter.execute(Monitor(ch, "PJSIP/sam", "listen"))
        await col.kind(EventKind.MONITOR_STARTED, call_id)
        await adapter.execute(Monitor(ch, "PJSIP/sam", "barge", session_id=res.session_id))
        await col.wait(lambda e: e.kind is EventKind.MONITOR_STARTED and e.data["mode"] == "barge")
        assert not fake.snoops()  # barge: the supervisor is in the call's own bridge
        assert f"cti-s-{res.session_id}" in fake.bridges[f"cti-b-{ch}"]
        fake.hangup(ch)
        await col.wait(lambda e: e.kind is EventKind.MONITOR_STOPPED and e.data["mode"] == "barge")
        await col.kind(EventKind.ENDED, call_id)
        assert await eventually(lambda: not fake.channels and not fake.bridges)


async def test_ring_all_bridges_the_first_to_answer_and_releases_the_others() -> None:
    async with running() as (fake, adapter, col):
        ch = fake.incoming("0612345678", "0170000100")
        q = await col.kind(EventKind.QUEUED)
        fake.endpoints["PJSIP/bob"] = Behaviour("manual")
        await adapter.execute(Connect(ch, (("alice", "PJSIP/alice"), ("bob", "PJSIP/bob"))))
        answered = await col.kind(EventKind.ANSWERED, q.call_id)
        assert answered.agent == "alice"
        no_answer = await col.kind(EventKind.NO_ANSWER, q.call_id)
        assert no_answer.agent == "bob"
        assert {e.agent for e in col.of(q.call_id) if e.kind is EventKind.RINGING} == {"alice", "bob"}


async def test_voicemail_drop_plays_then_ends_the_call_as_voicemail() -> None:
    async with running() as (fake, adapter, col):
        ch, call_id = await _answered(fake, adapter, col)
        await adapter.execute(VoicemailDrop(ch, "sound:cti/followup"))
        ended = await col.kind(EventKind.ENDED, call_id)
        assert ended.data["cause"] == "voicemail"
        assert any(e.kind is EventKind.PLAYBACK_FINISHED for e in col.of(call_id))


async def test_ended_calls_are_forgotten_past_keep_ended() -> None:
    adapter = make_adapter("http://127.0.0.1:9", keep_ended=2)
    for line in (FIX / "caller_hangup_while_queued.jsonl").read_text().splitlines():
        await adapter.handle_message(line)
    first = next(iter(adapter._calls))
    for n in range(3):  # three more calls that come and go
        for line in (FIX / "caller_hangup_while_queued.jsonl").read_text().splitlines():
            await adapter.handle_message(line.replace(first, f"{first}{n}"))
    assert len(adapter._calls) == 2 and first not in adapter._calls and not adapter._legs


async def test_attended_transfer_consults_then_hands_the_customer_to_the_target() -> None:
    async with running() as (fake, adapter, col):
        ch, call_id = await _answered(fake, adapter, col)
        fake.endpoints["PJSIP/bob"] = Behaviour("answer", 0.02)  # (bob is 'noanswer' in the harness)
        await adapter.execute(AttendedTransfer(ch, "PJSIP/bob", "consult"))
        await col.kind(EventKind.HELD, call_id)
        assert await eventually(lambda: len(fake.bridges.get(f"cti-x-{ch}", [])) == 2)
        await adapter.execute(AttendedTransfer(ch, "PJSIP/bob", "complete"))
        moved = await col.kind(EventKind.TRANSFERRED, call_id)
        assert moved.agent == "bob" and moved.data["attended"] is True
        assert await eventually(lambda: not [c for c in fake.channels if c.startswith("cti-a-")])
        fake.hangup(ch)
        ended = await col.kind(EventKind.ENDED, call_id)
        assert ended.data["cause"] == "normal" and ended.agent == "bob"
        assert [s[0] for s in normalize(col.of(call_id))] == [
            "created", "queued", "ringing", "answered", "held", "resumed", "transferred", "ended"]
        assert await eventually(lambda: not fake.channels and not fake.bridges)


async def test_attended_transfer_cancel_returns_the_agent_to_the_customer() -> None:
    async with running() as (fake, adapter, col):
        ch, call_id = await _answered(fake, adapter, col)
        fake.endpoints["PJSIP/bob"] = Behaviour("answer", 0.02)
        res = await adapter.execute(AttendedTransfer(ch, "PJSIP/bob", "consult"))
        assert await eventually(lambda: len(fake.bridges.get(f"cti-x-{ch}", [])) == 2)
        await adapter.execute(AttendedTransfer(ch, "PJSIP/bob", "cancel"))
        await col.kind(EventKind.RESUMED, call_id)
        assert await eventually(lambda: res.detail["consult_leg"] not in fake.channels)
        assert len(fake.bridges[f"cti-b-{ch}"]) == 2 and f"cti-x-{ch}" not in fake.bridges
        assert not [e for e in col.of(call_id) if e.kind in (EventKind.TRANSFERRED, EventKind.ENDED)]


async def test_takeover_makes_the_supervisor_the_agent_and_releases_the_agent() -> None:
    async with running() as (fake, adapter, col):
        ch, call_id = await _answered(fake, adapter, col)
        await adapter.execute(Monitor(ch, "PJSIP/sam", "takeover"))
        moved = await col.kind(EventKind.TRANSFERRED, call_id)
        assert moved.agent == "sam"
        assert await eventually(lambda: not [c for c in fake.channels if c.startswith("cti-a-")])
        assert ch in fake.channels, "the customer stays on the line"
        fake.hangup(ch)
        assert (await col.kind(EventKind.ENDED, call_id)).data["cause"] == "normal"
        assert await eventually(lambda: not fake.channels)


async def test_a_field_malformed_on_use_is_a_counted_wire_error_not_a_crash() -> None:
    adapter = make_adapter("http://127.0.0.1:9")  # never started: replay needs no connection
    adapter.metrics = Metrics()
    bad = ('{"type": "StasisStart", "timestamp": "2026-11-22T09:40:01.130+0000", "application": "cti", "args": [],'
           ' "channel": {"id": "1.1", "name": "PJSIP/trunk-00000001", "state": "Ring", "caller": "0612",'
           ' "dialplan": {"context": "from-trunk", "exten": "0170000100"}}}')
    with capture_logs() as logs:
        await adapter.handle_message(bad)
    errors = [entry for entry in logs if entry["event"] == "ari_wire_error"]
    assert len(errors) == 1 and "caller is not an object" in errors[0]["reason"]
    assert adapter.metrics.wire_errors.labels("pbx")._value.get() == 1
    for line in (FIX / "caller_hangup_while_queued.jsonl").read_text().splitlines():
        await adapter.handle_message(line)  # the adapter goes on with the next calls
    assert not adapter._queue.empty()


async def test_events_socket_authenticates_with_a_header_never_a_password_in_the_url() -> None:
    async with running() as (fake, adapter, _col):
        assert adapter.ready
        assert fake.ws_auth == ["header"]
        assert "api_key" not in adapter._ws_url() and adapter.password not in adapter._ws_url()


async def test_hold_command_holds_the_customer_and_reports_it_itself() -> None:
    """ARI's hold publishes no ChannelHold (it indicates hold toward one device): the adapter
    emits held/resumed itself, and the device held is the customer's, who then hears music."""
    async with running() as (fake, adapter, col):
        ch, call_id = await _answered(fake, adapter, col)
        agent_leg = adapter._calls[ch].agent_leg or ""
        await adapter.execute(Hold(ch))
        await col.kind(EventKind.HELD, call_id)
        assert fake.channels[ch].hold and not fake.channels[agent_leg].hold
        await adapter.execute(Unhold(ch))
        await col.kind(EventKind.RESUMED, call_id)
        assert not fake.channels[ch].hold


async def test_hold_from_the_agents_phone_is_reported_once() -> None:
    async with running() as (fake, adapter, col):
        ch, call_id = await _answered(fake, adapter, col)
        agent_leg = adapter._calls[ch].agent_leg or ""
        fake.phone_hold(agent_leg)
        await col.kind(EventKind.HELD, call_id)
        await adapter.execute(Hold(ch))  # the agent also presses hold in the panel
        fake.phone_hold(agent_leg, on=False)
        await col.kind(EventKind.RESUMED, call_id)
        fake.hangup(ch)
        await col.kind(EventKind.ENDED, call_id)
        assert [s[0] for s in normalize(col.of(call_id))].count("held") == 1


async def _redeliver_stasis_start(fake, col, channel_id: str, marker: str) -> None:  # type: ignore[no-untyped-def]
    """Send a channel's StasisStart again (a resync race or a duplicate delivery), then wait
    until the adapter has handled it: a DTMF sent after it comes back as an event."""
    line = next(line for line in fake.wire_log
                if '"type": "StasisStart"' in line and f'"id": "{channel_id}"' in line)
    fake.send_raw(line)
    fake.press(marker, "9")
    await col.wait(lambda e: e.kind is EventKind.DTMF and e.data["digit"] == "9")


async def test_a_repeated_stasis_start_of_the_answered_agent_keeps_the_call() -> None:
    async with running() as (fake, adapter, col):
        ch, call_id = await _answered(fake, adapter, col)
        agent_leg = adapter._calls[ch].agent_leg or ""
        await _redeliver_stasis_start(fake, col, agent_leg, ch)
        assert agent_leg in fake.channels and fake.bridges[f"cti-b-{ch}"] == [ch, agent_leg]
        assert not [e for e in col.of(call_id) if e.kind is EventKind.ENDED]


async def test_a_repeated_stasis_start_of_the_click_to_call_agent_does_not_dial_again() -> None:
    async with running() as (fake, adapter, col):
        fake.endpoints["PJSIP/+33612345678"] = Behaviour("answer", 0.03)
        call_id = str(uuid.uuid4())
        res = await adapter.execute(Originate("PJSIP/alice", "+33612345678", call_id, agent="alice"))
        await col.kind(EventKind.ANSWERED, call_id)
        await _redeliver_stasis_start(fake, col, res.provider_call_id or "", f"cti-c-{call_id}")
        assert {res.provider_call_id, f"cti-c-{call_id}"} <= set(fake.channels)
        assert len([p for m, p in fake.requests if m == "POST" and p == "/channels"]) == 2
        assert not [e for e in col.of(call_id) if e.kind is EventKind.ENDED]


async def test_a_repeated_stasis_start_of_the_supervisor_sets_up_no_second_snoop() -> None:
    async with running() as (fake, adapter, col):
        ch, call_id = await _answered(fake, adapter, col)
        res = await adapter.execute(Monitor(ch, "PJSIP/sam", "listen"))
        await col.kind(EventKind.MONITOR_STARTED, call_id)
        await _redeliver_stasis_start(fake, col, f"cti-s-{res.session_id}", ch)
        assert len(fake.snoops()) == 1
        assert len([b for b in fake.bridges if b.startswith("cti-m-")]) == 1


async def test_a_recording_still_running_at_hangup_is_fetched_once_asterisk_finished_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Asterisk finishes a bridge recording after the bridge is gone (RecordingFinished comes
    later): fetching the file before that would find nothing, or half a file."""
    async with running(storage_dir=str(tmp_path)) as (fake, adapter, col):
        ch, call_id = await _answered(fake, adapter, col)
        await adapter.execute(Record(ch, "start"))
        await col.kind(EventKind.RECORDING_STARTED, call_id)
        fake.hangup(ch)  # never stopped: the recording ends with the call
        ready = await col.kind(EventKind.RECORDING_READY, call_id)
        assert Path(ready.data["path"]).read_bytes()[:4] == b"RIFF"  # noqa: ASYNC240 - tiny file
        kinds = [s[0] for s in normalize(col.of(call_id))]
        assert kinds.index("recording_stopped") < kinds.index("recording_ready")


async def test_application_taken_over_by_another_client_makes_the_adapter_not_ready() -> None:
    """ARI gives an application's events to one WebSocket, the newest: ours then receives
    ApplicationReplaced and nothing more, so it must stop claiming to be ready."""
    async with running() as (fake, adapter, _col):
        with capture_logs() as logs:
            fake.emit("ApplicationReplaced")
            assert await eventually(lambda: not adapter.ready)
        assert [e for e in logs if e["event"] == "ari_application_replaced"]


@pytest.mark.parametrize(("method", "path", "status"), [
    ("POST", r"^/channels/[^/]+/answer$", 500),          # answering the customer
    ("POST", r"^/bridges/cti-b-[^/]+$", 409),             # creating the bridge
    ("POST", r"^/bridges/cti-b-[^/]+/addChannel$", 404),  # bridging the two
    ("POST", r"^/bridges/cti-b-[^/]+/addChannel$", 0),    # the connection drops
])
async def test_agent_who_cannot_be_bridged_is_released_and_the_call_offered_again(
        method: str, path: str, status: int) -> None:
    """An agent picked up but the customer could not be answered or bridged: the agent must
    not sit on a dead line; the offer is reported failed and the next agent gets the call."""
    async with running() as (fake, adapter, col):
        ch = fake.incoming("0612345678", "0170000100")
        q = await col.kind(EventKind.QUEUED)
        fake.fail(method, path, status)
        with capture_logs() as logs:
            await adapter.execute(Connect(ch, (("alice", "PJSIP/alice"),)))
            failed = await col.kind(EventKind.NO_ANSWER, q.call_id)
        assert failed.agent == "alice" and failed.data["reason"] == "failed"
        assert [e for e in logs if e["event"] == "ari_agent_bridge_failed"]
        assert await eventually(lambda: not [c for c in fake.channels if c.startswith("cti-a-")]
                                and not fake.bridges), "the agent's leg and the bridge are gone"
        assert ch in fake.channels, "the customer waits"
        await adapter.execute(Connect(ch, (("sam", "PJSIP/sam"),)))  # the router's next offer
        answered = await col.kind(EventKind.ANSWERED, q.call_id)
        assert answered.agent == "sam" and len(fake.bridges[f"cti-b-{ch}"]) == 2
        fake.hangup(ch)
        assert (await col.kind(EventKind.ENDED, q.call_id)).data["cause"] == "normal"
        kinds = [s[0] for s in normalize(col.of(q.call_id))]
        assert kinds.count("no_answer") == 1 and kinds.count("answered") == 1


async def test_ring_all_goes_on_ringing_when_the_first_agent_cannot_be_bridged() -> None:
    async with running() as (fake, adapter, col):
        ch = fake.incoming("0612345678", "0170000100")
        q = await col.kind(EventKind.QUEUED)
        fake.endpoints["PJSIP/bob"] = Behaviour("manual")
        fake.fail("POST", r"^/bridges/cti-b-[^/]+/addChannel$", 500)
        await adapter.execute(Connect(ch, (("alice", "PJSIP/alice"), ("bob", "PJSIP/bob"))))
        assert (await col.kind(EventKind.NO_ANSWER, q.call_id)).agent == "alice"
        bob = next(leg for leg, agent in adapter._calls[ch].ringing_legs.items() if agent == "bob")
        assert bob in fake.channels, "bob's phone still rings"
        fake.answer(bob)
        answered = await col.kind(EventKind.ANSWERED, q.call_id)
        assert answered.agent == "bob" and fake.bridges[f"cti-b-{ch}"] == [ch, bob]


async def test_a_missing_recording_is_not_a_missing_call_and_errors_carry_asterisks_reason() -> None:
    async with running() as (fake, adapter, col):
        ch, call_id = await _answered(fake, adapter, col)
        name = (await adapter.execute(Record(ch, "start"))).detail["recording"]
        await col.kind(EventKind.RECORDING_STARTED, call_id)
        del fake.live[name]  # Asterisk lost it (its disk filled up, say)
        with pytest.raises(AdapterError) as lost:
            await adapter.execute(Record(ch, "pause"))
        assert not isinstance(lost.value, CallNotFound)
        assert str(lost.value) == (f"recording {name!r} not found "
                                   f"(ARI POST /recordings/live/{name}/pause: Recording not found)")
        fake.fail("POST", r"/hold$", 500)
        with pytest.raises(AdapterError, match=r"-> 500: injected failure$"):
            await adapter.execute(Hold(ch))
        del fake.channels[ch]  # the customer's channel vanished without a word
        with pytest.raises(CallNotFound, match=rf"^channel '{ch}' not found \(.*: Channel not found\)$"):
            await adapter.execute(Hold(ch))
