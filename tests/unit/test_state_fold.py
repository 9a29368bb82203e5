"""Call state is a pure fold: any permutation or duplication of the events gives the same record."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from cti.calls.state import CallFolder, fold
from cti.model import Call, CallEvent, CallState, Direction, EndCause, EventKind, Outcome, make_call_id, make_event_id

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CALL = make_call_id("acme", "pbx", "c1")


def ev(kind: EventKind, at: float, seq: int, **kw) -> CallEvent:
    return CallEvent(
        event_id=make_event_id("pbx", "c1", seq, kind), provider="pbx", provider_call_id="c1", call_id=CALL,
        kind=kind, occurred_at=T0 + timedelta(seconds=at), seq=seq, tenant="acme", **kw,
    )


def inbound_answered_with_hold() -> list[CallEvent]:
    return [
        ev(EventKind.CREATED, 0, 1, direction=Direction.INBOUND, from_number="+33612345678", to_number="+33170000100"),
        ev(EventKind.QUEUED, 0.5, 2, queue="support"),
        ev(EventKind.RINGING, 4, 3, agent="alice"),
        ev(EventKind.ANSWERED, 9, 4, agent="alice"),
        ev(EventKind.RECORDING_STARTED, 9.5, 5),
        ev(EventKind.HELD, 30, 6),
        ev(EventKind.RESUMED, 45, 7),
        ev(EventKind.ENDED, 120, 8, data={"cause": "normal"}),
        ev(EventKind.RECORDING_READY, 125, 9, data={"path": "/rec/c1.wav"}),
    ]


def test_answered_call_durations_and_outcome() -> None:
    call = fold(inbound_answered_with_hold())
    assert call is not None
    assert call.state is CallState.ENDED and call.outcome is Outcome.ANSWERED
    assert call.direction is Direction.INBOUND and call.queue == "support" and call.agent == "alice"
    assert call.ring_s == 5.0          # ringing 4 -> answered 9
    assert call.hold_s == 15.0         # held 30 -> resumed 45
    assert call.talk_s == 96.0         # 111 s answered minus 15 s on hold
    assert call.wait_s == 8.5          # queued 0.5 -> answered 9
    assert call.recording == "/rec/c1.wav" and call.recording_state == "ready"


def test_ended_before_answered_arrives_still_yields_answered() -> None:
    evs = inbound_answered_with_hold()
    reordered = [evs[7], evs[0], evs[3], evs[2], evs[1], evs[4], evs[6], evs[5], evs[8]]
    assert fold(reordered) == fold(evs)


def test_terminal_state_is_never_undone() -> None:
    evs = inbound_answered_with_hold()
    late_ring = ev(EventKind.RINGING, 200, 10, agent="bob")
    call = fold([*evs, late_ring])
    assert call.state is CallState.ENDED and call.agent == "alice" and call.talk_s == 96.0


def test_caller_leaving_the_queue_is_abandoned() -> None:
    evs = [
        ev(EventKind.CREATED, 0, 1, direction=Direction.INBOUND, from_number="+33612345678"),
        ev(EventKind.QUEUED, 0, 2, queue="support"),
        ev(EventKind.ENDED, 12, 3, data={"cause": EndCause.CALLER_HANGUP}),
    ]
    call = fold(evs)
    assert call.outcome is Outcome.ABANDONED and call.wait_s == 12.0 and call.talk_s == 0.0


def test_unanswered_direct_call_is_missed_and_busy_outbound_is_busy() -> None:
    missed = fold([ev(EventKind.CREATED, 0, 1, direction=Direction.INBOUND), ev(EventKind.RINGING, 0, 2, agent="a"),
                   ev(EventKind.ENDED, 20, 3, data={"cause": "no_answer"})])
    assert missed.outcome is Outcome.MISSED and missed.ring_s == 20.0
    busy = fold([ev(EventKind.CREATED, 0, 1, direction=Direction.OUTBOUND), ev(EventKind.ENDED, 3, 2,
                                                                                data={"cause": "busy"})])
    assert busy.outcome is Outcome.BUSY
    vm = fold([ev(EventKind.CREATED, 0, 1, direction=Direction.OUTBOUND), ev(EventKind.ANSWERED, 5, 2, agent="a"),
               ev(EventKind.ENDED, 30, 3, data={"cause": "voicemail"})])
    assert vm.outcome is Outcome.VOICEMAIL


def test_ring_all_records_every_agent_rung_and_the_one_who_answered() -> None:
    evs = [ev(EventKind.CREATED, 0, 1, direction=Direction.INBOUND), ev(EventKind.QUEUED, 0, 2, queue="sales"),
           ev(EventKind.RINGING, 1, 3, agent="a"), ev(EventKind.RINGING, 1, 4, agent="b"),
           ev(EventKind.NO_ANSWER, 3, 5, agent="a"), ev(EventKind.ANSWERED, 3, 6, agent="b"),
           ev(EventKind.ENDED, 10, 7)]
    call = fold(evs)
    assert call.agents_rung == ("a", "b") and call.agent == "b" and call.outcome is Outcome.ANSWERED


@settings(max_examples=200, deadline=None)
@given(st.permutations(inbound_answered_with_hold()), st.lists(st.integers(0, 8), max_size=6))
def test_any_permutation_or_duplication_gives_the_same_record(perm, dup_idx) -> None:
    expected = fold(inbound_answered_with_hold())
    events = list(perm) + [perm[i] for i in dup_idx]
    assert fold(events) == expected


@settings(max_examples=100, deadline=None)
@given(st.permutations(inbound_answered_with_hold()), st.lists(st.integers(0, 8), max_size=6))
def test_incremental_folder_converges_to_the_batch_fold(perm, dup_idx) -> None:
    folder = CallFolder()
    last = None
    for e in list(perm) + [perm[i] for i in dup_idx]:
        out = folder.add(e)
        if out is not None:
            last = out
    assert last == fold(inbound_answered_with_hold())


def test_event_round_trips_through_dict_and_bad_fields_are_named() -> None:
    e = inbound_answered_with_hold()[0]
    assert CallEvent.from_dict(e.to_dict()) == e
    # to_dict is spelled out field by field: a field added to CallEvent must be added there too
    assert set(e.to_dict()) == {f.name for f in dataclasses.fields(CallEvent)}
    nested = dataclasses.replace(e, data={"reason": {"code": 17}})
    copied = nested.to_dict()
    copied["data"]["reason"]["code"] = 0  # the dict form is a copy: the event stays as it was
    assert nested.data["reason"]["code"] == 17
    d = e.to_dict()
    del d["call_id"]
    try:
        CallEvent.from_dict(d)
    except ValueError as exc:
        assert "call_id" in str(exc)
    else:
        raise AssertionError("missing field accepted")
    d = e.to_dict() | {"kind": "exploded"}
    try:
        CallEvent.from_dict(d)
    except ValueError as exc:
        assert "exploded" in str(exc)


@st.composite
def valid_sequences(draw) -> list[CallEvent]:
    """Random but valid call lifecycles: queue or not, answered or not, holds, ring-all, recording."""
    t = 0.0
    seq = 0
    out: list[CallEvent] = []

    def add(kind: EventKind, **kw) -> None:
        nonlocal seq
        seq += 1
        out.append(ev(kind, t, seq, **kw))

    direction = draw(st.sampled_from([Direction.INBOUND, Direction.OUTBOUND]))
    add(EventKind.CREATED, direction=direction, from_number="+33612345678")
    if direction is Direction.INBOUND and draw(st.booleans()):
        t += draw(st.floats(0, 5))
        add(EventKind.QUEUED, queue="support")
    agents = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=0, max_size=3, unique=True))
    for a in agents:
        t += draw(st.floats(0, 3))
        add(EventKind.RINGING, agent=a)
    answered = bool(agents) and draw(st.booleans())
    if answered:
        t += draw(st.floats(0, 10))
        add(EventKind.ANSWERED, agent=agents[-1])
        for _ in range(draw(st.integers(0, 2))):
            t += draw(st.floats(0.1, 30))
            add(EventKind.HELD)
            t += draw(st.floats(0.1, 30))
            add(EventKind.RESUMED)
    t += draw(st.floats(0.1, 60))
    add(EventKind.ENDED, data={"cause": draw(st.sampled_from(["normal", "caller_hangup", "busy", "no_answer"]))})
    if draw(st.booleans()):
        t += 1
        add(EventKind.RECORDING_READY, data={"path": "/r.wav"})
    return out


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_valid_sequences_converge_whatever_the_delivery(data) -> None:
    events = data.draw(valid_sequences())
    expected = fold(events)
    shuffled = data.draw(st.permutations(events))
    dups = data.draw(st.lists(st.sampled_from(events), max_size=4))
    got = fold(list(shuffled) + dups)
    assert got == expected
    assert got.state is CallState.ENDED and got.outcome is not None
    assert got.talk_s >= 0 and got.hold_s >= 0 and got.ring_s >= 0


def test_call_record_round_trips_through_its_dict_form() -> None:
    call = fold(inbound_answered_with_hold())
    assert Call.from_dict(call.to_dict()) == call
    # a table row: naive datetimes are UTC, extra columns are ignored
    row = {**call.to_dict(), "created_at": call.created_at.replace(tzinfo=None), "contact_id": "ct-1"}
    assert Call.from_dict(row) == call
