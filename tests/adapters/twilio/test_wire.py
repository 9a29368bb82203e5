"""Twilio wire parsing: recorded callbacks replayed through the pure functions."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cti.adapters.twilio import wire
from cti.model import Direction, EventKind, make_call_id

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "callbacks.json").read_text())
CTX = wire.WireContext(provider="tw1", tenant="t1", region="FR",
                       queue_numbers={"+33170000100": "support"}, agent_endpoints={"client:alice": "alice"})
NOW = datetime(2026, 11, 22, 9, 40, 1, 500_000, tzinfo=UTC)
PARSERS = {"voice": wire.inbound_events, "status": wire.status_events,
           "recording": wire.recording_events, "conference": wire.conference_events}


def replay(name: str, **flags: bool) -> list:
    fx = FIXTURES[name]
    params = wire.parse_form(fx["body"].encode())
    query = dict(p.split("=", 1) for p in fx["query"].split("&") if p)
    return PARSERS[fx["path"]](params, query, CTX, NOW, **flags)


def test_voice_webhook_creates_and_queues_the_call() -> None:
    created, queued = replay("voice_inbound")
    sid = "CA5c9b7e5f4f6c4f9c8a0d7c1c2b3a4d5e"
    assert created.kind is EventKind.CREATED and created.direction is Direction.INBOUND
    assert created.call_id == make_call_id("t1", "tw1", sid)
    assert (created.from_number, created.to_number) == ("+33612345678", "+33170000100")
    assert queued.kind is EventKind.QUEUED and queued.queue == "support"


def test_national_numbers_are_normalized_to_e164_before_queue_lookup() -> None:
    created, queued = replay("voice_inbound_national")
    assert created.from_number == "+33612345678"
    assert queued.queue == "support"


def test_replayed_callbacks_give_the_same_event_ids() -> None:
    assert [e.event_id for e in replay("agent_leg_ringing")] == [e.event_id for e in replay("agent_leg_ringing")]


def test_agent_leg_maps_onto_the_parent_call_with_the_agent() -> None:
    (ringing,) = replay("agent_leg_ringing")
    (answered,) = replay("agent_leg_answered")
    (missed,) = replay("agent_leg_no_answer")
    parent = "CA5c9b7e5f4f6c4f9c8a0d7c1c2b3a4d5e"
    assert {ringing.provider_call_id, answered.provider_call_id, missed.provider_call_id} == {parent}
    assert (ringing.kind, ringing.agent) == (EventKind.RINGING, "alice")
    assert (answered.kind, answered.agent) == (EventKind.ANSWERED, "alice")
    assert (missed.kind, missed.data["reason"]) == (EventKind.NO_ANSWER, "no-answer")


@pytest.mark.parametrize(("flags", "cause"), [
    ({}, "caller_hangup"), ({"answered": True}, "normal"),
    ({"answered": True, "transferred": True}, "transferred"), ({"voicemail": True}, "voicemail"),
])
def test_completed_status_end_cause_depends_on_what_happened(flags: dict, cause: str) -> None:
    (ended,) = replay("status_completed", **flags)
    assert ended.kind is EventKind.ENDED and ended.data["cause"] == cause
    assert ended.data["duration_s"] == 149 and ended.seq == 0


def test_customer_leg_busy_ends_the_click_to_call_with_its_call_id() -> None:
    (ended,) = replay("status_busy_customer_leg")
    assert ended.kind is EventKind.ENDED and ended.data["cause"] == "busy"
    assert ended.call_id == "c2c-0001"
    assert ended.provider_call_id == "CA77776666555544443333222211110000"


def test_ended_has_one_id_whichever_leg_reports_it() -> None:
    sid = "CA77776666555544443333222211110000"
    parent = {"CallSid": sid, "CallStatus": "completed", "CallDuration": "3"}
    (a,) = wire.status_events(parent, {"role": "originate", "cid": "c2c-0001"}, CTX, NOW)
    (b,) = replay("status_busy_customer_leg")
    assert a.event_id == b.event_id


def test_recording_completed_gives_stopped_and_ready_with_wav_url() -> None:
    stopped, ready = replay("recording_completed")
    assert stopped.kind is EventKind.RECORDING_STOPPED
    assert ready.kind is EventKind.RECORDING_READY and ready.data["url"].endswith(".wav")
    assert ready.data["duration_s"] == 141 and ready.data["channels"] == 2


def test_conference_hold_and_monitor_join() -> None:
    (held,) = replay("conference_hold")
    assert held.kind is EventKind.HELD and held.seq == 4
    (mon,) = replay("conference_monitor_join")
    assert mon.kind is EventKind.MONITOR_STARTED
    assert mon.data == {"mode": "whisper", "supervisor": "sam", "session_id": "CAcccc1111dddd2222eeee3333ffff4444"}


def test_whole_second_timestamp_is_refined_by_receive_time_only_within_that_second() -> None:
    p = {"Timestamp": "Sun, 22 Nov 2026 09:40:01 +0000"}
    assert wire.occurred_at(p, NOW) == NOW
    late = datetime(2026, 11, 22, 9, 45, tzinfo=UTC)
    assert wire.occurred_at(p, late) == datetime(2026, 11, 22, 9, 40, 1, tzinfo=UTC)


@pytest.mark.parametrize(("body", "message"), [
    (b"\xff\xfe", "not UTF-8"),
    (b"CallSid", "not form-encoded"),
])
def test_bad_bodies_are_named(body: bytes, message: str) -> None:
    with pytest.raises(wire.WireError, match=message):
        wire.parse_form(body)


@pytest.mark.parametrize(("params", "message"), [
    ({"CallStatus": "completed"}, "missing field CallSid"),
    ({"CallSid": "CA1", "CallStatus": "exploded"}, "unknown CallStatus 'exploded'"),
    ({"CallSid": "CA1", "CallStatus": "completed", "SequenceNumber": "x"}, "invalid SequenceNumber"),
    ({"CallSid": "CA1", "CallStatus": "completed", "Timestamp": "yesterday"}, "invalid Timestamp"),
])
def test_bad_status_callbacks_are_named(params: dict, message: str) -> None:
    with pytest.raises(wire.WireError, match=message):
        wire.status_events(params, {}, CTX, NOW)


def test_twiml_is_well_formed_and_escaped() -> None:
    root = ET.fromstring(wire.enqueue_twiml("support & sales", "https://x/wait?a=1&b=2"))
    assert root.find("Enqueue").text == "support & sales"
    assert root.find("Enqueue").get("waitUrl") == "https://x/wait?a=1&b=2"
    conf = ET.fromstring(wire.conference_twiml("CA1", "https://h/conference?parent=CA1")).find("./Dial/Conference")
    assert conf.get("participantLabel") == "customer" and conf.get("endConferenceOnExit") == "true"
    assert ET.fromstring(wire.dial_twiml("client:bob")).find("./Dial/Client").text == "bob"


@pytest.mark.parametrize(("mode", "form"), [
    ("whisper", {"Coaching": "true", "CallSidToCoach": "CAagent", "Muted": "false"}),
    ("listen", {"Coaching": "false", "Muted": "true"}),
    ("barge", {"Coaching": "false", "Muted": "false"}),
])
def test_monitor_modes_map_to_participant_flags(mode: str, form: dict) -> None:
    assert wire.monitor_form(mode, "CAagent") == form


def test_dedupe_keys_are_the_token_and_the_callback_identity() -> None:
    params = {"CallSid": "CA1", "SequenceNumber": "3"}
    assert wire.dedupe_keys(params, {"I-Twilio-Idempotency-Token": "tok"}, "/s") == ["t:tok", "s:/s:CA1:3"]
    assert wire.dedupe_keys(params, {}, "/s") == ["s:/s:CA1:3"]


def _leg_completed(role: str) -> tuple[dict, dict]:
    """An answered leg's `completed` callback (20 s of talk) whose `in-progress` has not arrived."""
    params = {"CallSid": "CA0f1e2d3c4b5a69788796a5b4c3d2e1f0", "CallStatus": "completed",
              "ParentCallSid": "CA5c9b7e5f4f6c4f9c8a0d7c1c2b3a4d5e", "To": "client:alice",
              "CallDuration": "20", "SequenceNumber": "3", "Timestamp": "Sun, 22 Nov 2026 09:40:24 +0000"}
    query = {"role": role, "agent": "alice", "cid": "c2c-0001"}
    return params, query


@pytest.mark.parametrize("role", ["agent", "customer"])
def test_completed_leg_proves_the_answer_when_in_progress_is_late(role: str) -> None:
    """Twilio's `completed` means answered then hung up: it answers the call, dated end - CallDuration."""
    params, query = _leg_completed(role)
    (answered,) = wire.status_events(params, query, CTX, NOW)
    assert answered.kind is EventKind.ANSWERED and answered.agent == "alice"
    assert answered.occurred_at == datetime(2026, 11, 22, 9, 40, 4, tzinfo=UTC)
    # the same fact as the (late) in-progress callback: one event id, the first report wins
    (live,) = wire.status_events({**params, "CallStatus": "in-progress", "SequenceNumber": "2"}, query, CTX, NOW)
    assert live.event_id == answered.event_id


def test_a_dual_recording_says_who_is_on_each_channel_only_when_we_said_it() -> None:
    fx = FIXTURES["recording_completed"]
    params = wire.parse_form(fx["body"].encode())
    query = dict(p.split("=", 1) for p in fx["query"].split("&"))
    _, ready = wire.recording_events(params, {**query, "first": "customer"}, CTX, NOW)
    assert ready.data["channel_roles"] == ["customer", "agent"]
    _, ready = wire.recording_events(params, query, CTX, NOW)  # started elsewhere: not known
    assert "channel_roles" not in ready.data
    mono = {**params, "RecordingChannels": "1"}
    _, ready = wire.recording_events(mono, {**query, "first": "agent"}, CTX, NOW)
    assert "channel_roles" not in ready.data
