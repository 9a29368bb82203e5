"""Call state as a pure fold of events (DESIGN principle 2).

`fold(events)` dedupes on `event_id`, orders the facts by when they happened
(occurred_at, then the provider's seq, then a fixed rank per kind), and applies
them in that order. Because the order is derived from the events themselves, any
permutation or duplication of the same events gives the same `Call`. Once an
`ended` event is applied the call's state, outcome and durations are frozen;
later facts (recording_ready, say) only annotate it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from cti.model import Call, CallEvent, CallState, Direction, EndCause, EventKind, Outcome

# Tie-break for events stamped with the same instant and seq: the lifecycle order.
_RANK = {
    EventKind.CREATED: 0,
    EventKind.QUEUED: 1,
    EventKind.RINGING: 2,
    EventKind.NO_ANSWER: 3,
    EventKind.ANSWERED: 4,
    EventKind.RECORDING_STARTED: 4,
    EventKind.HELD: 5,
    EventKind.RESUMED: 6,
    EventKind.RECORDING_PAUSED: 7,
    EventKind.RECORDING_RESUMED: 8,
    EventKind.DTMF: 9,
    EventKind.MONITOR_STARTED: 10,
    EventKind.MONITOR_STOPPED: 11,
    EventKind.PLAYBACK_FINISHED: 12,
    EventKind.TRANSFERRED: 13,
    EventKind.RECORDING_STOPPED: 14,
    EventKind.ENDED: 15,
    EventKind.RECORDING_READY: 16,
    EventKind.AGENT_STATE_CHANGED: 17,
}


def order_key(e: CallEvent) -> tuple[datetime, int, int, str]:
    return (e.occurred_at, e.seq, _RANK.get(e.kind, 99), e.event_id)


def _secs(a: datetime | None, b: datetime | None) -> float:
    if a is None or b is None:
        return 0.0
    return max(0.0, (b - a).total_seconds())


def outcome_for(call: Call, cause: str | None) -> Outcome:
    """Outcome of a call that just ended. Pure; documented in docs/metrics.md."""
    if cause == EndCause.VOICEMAIL:
        return Outcome.VOICEMAIL
    if call.answered_at is not None:
        return Outcome.ANSWERED
    if cause == EndCause.BUSY:
        return Outcome.BUSY
    if cause == EndCause.FAILED:
        return Outcome.FAILED
    if call.direction is Direction.OUTBOUND:
        return Outcome.CANCELED if cause == EndCause.CANCELED else Outcome.MISSED
    # inbound / internal, never answered: waiting in a queue -> abandoned; else missed
    if call.queue is not None and cause in (None, EndCause.CALLER_HANGUP, EndCause.NORMAL, EndCause.CANCELED):
        return Outcome.ABANDONED
    if cause == EndCause.CANCELED and call.queue is None:
        return Outcome.MISSED
    return Outcome.MISSED


def _new_call(e: CallEvent) -> Call:
    return Call(
        call_id=e.call_id,
        tenant=e.tenant,
        provider=e.provider,
        provider_call_id=e.provider_call_id,
        direction=e.direction or Direction.INBOUND,
        state=CallState.NEW,
    )


def _fill(call: Call, e: CallEvent) -> Call:
    """Facts any event may carry (numbers, direction, queue) fill blanks, never overwrite."""
    changes: dict[str, object] = {}
    if e.direction is not None and call.created_at is None and call.direction != e.direction:
        changes["direction"] = e.direction
    if e.from_number and not call.from_number:
        changes["from_number"] = e.from_number
    if e.to_number and not call.to_number:
        changes["to_number"] = e.to_number
    if e.queue and not call.queue:
        changes["queue"] = e.queue
    return replace(call, **changes) if changes else call


def apply(call: Call | None, e: CallEvent) -> Call:
    """Apply one event, assuming events arrive in `order_key` order."""
    if call is None:
        call = _new_call(e)
    call = _fill(call, e)
    k = e.kind
    at = e.occurred_at
    ch: dict[str, object] = {"events": call.events + 1, "last_event_at": at}
    ended = call.state is CallState.ENDED

    if k is EventKind.RECORDING_READY:
        ch["recording"] = e.data.get("url") or e.data.get("path") or e.data.get("recording") or call.recording
        ch["recording_state"] = "ready"
    elif k is EventKind.RECORDING_STARTED and call.recording_state != "ready":
        ch["recording_state"] = "recording"
        ch["recording"] = e.data.get("recording") or call.recording
    elif k is EventKind.RECORDING_PAUSED and call.recording_state != "ready":
        ch["recording_state"] = "paused"
    elif k is EventKind.RECORDING_RESUMED and call.recording_state != "ready":
        ch["recording_state"] = "recording"
    elif k is EventKind.RECORDING_STOPPED and call.recording_state != "ready":
        ch["recording_state"] = "stopped"
    elif ended:
        pass  # a terminal state is never undone
    elif k is EventKind.CREATED:
        ch["created_at"] = call.created_at or at
        if e.direction is not None:
            ch["direction"] = e.direction
    elif k is EventKind.QUEUED:
        ch["queued_at"] = call.queued_at or at
        if call.state in (CallState.NEW,):
            ch["state"] = CallState.QUEUED
    elif k is EventKind.RINGING:
        ch["ringing_at"] = call.ringing_at or at
        if e.agent and e.agent not in call.agents_rung:
            ch["agents_rung"] = (*call.agents_rung, e.agent)
        if call.answered_at is None:
            ch["state"] = CallState.RINGING
            if e.agent:
                ch["agent"] = e.agent
    elif k is EventKind.NO_ANSWER:
        # back to waiting unless another agent still rings (ring-all) or it was answered
        if call.answered_at is None and call.state is CallState.RINGING and call.queue:
            ch["state"] = CallState.QUEUED
    elif k is EventKind.ANSWERED:
        if call.answered_at is None:
            ch["answered_at"] = at
            ch["state"] = CallState.ANSWERED
            if e.agent:
                ch["agent"] = e.agent
    elif k is EventKind.HELD:
        if call.state is CallState.ANSWERED:
            ch["state"] = CallState.HELD
            ch["_held_since"] = at
    elif k is EventKind.RESUMED:
        if call.state is CallState.HELD:
            ch["state"] = CallState.ANSWERED
    elif k is EventKind.TRANSFERRED:
        ch["transferred_to"] = e.data.get("target") or e.agent or call.transferred_to
        if e.agent and call.answered_at is not None:
            ch["agent"] = e.agent
    elif k is EventKind.ENDED:
        ch["state"] = CallState.ENDED
        ch["ended_at"] = at
        ch["end_cause"] = e.data.get("cause") or EndCause.NORMAL
    return replace(call, **{key: v for key, v in ch.items() if not key.startswith("_")})


def fold(events: Iterable[CallEvent]) -> Call | None:
    """Fold a call's events (any order, duplicates allowed) into its record."""
    unique: dict[str, CallEvent] = {}
    for e in events:
        unique.setdefault(e.event_id, e)
    if not unique:
        return None
    ordered = sorted(unique.values(), key=order_key)
    call: Call | None = None
    hold_s = 0.0
    held_since: datetime | None = None
    for e in ordered:
        before = call
        call = apply(call, e)
        # hold time: intervals between held and resumed (or the end) while answered
        if before is not None and before.state is CallState.ANSWERED and call.state is CallState.HELD:
            held_since = e.occurred_at
        elif held_since is not None and call.state is not CallState.HELD:
            hold_s += _secs(held_since, e.occurred_at)
            held_since = None
    assert call is not None
    return _finish(call, hold_s)


def _finish(call: Call, hold_s: float) -> Call:
    """Derived fields: durations and outcome (only meaningful once ended)."""
    start = call.created_at or call.queued_at or call.ringing_at or call.answered_at
    queue_entry = call.queued_at or (call.created_at if call.queue else None)
    if call.state is not CallState.ENDED:
        return replace(call, created_at=start, hold_s=hold_s)
    ended = call.ended_at
    ring_from = call.ringing_at
    ring_s = _secs(ring_from, call.answered_at or ended) if ring_from else 0.0
    talk_s = max(0.0, _secs(call.answered_at, ended) - hold_s) if call.answered_at else 0.0
    wait_end = call.answered_at or ended
    wait_s = _secs(queue_entry, wait_end) if queue_entry else 0.0
    outcome = outcome_for(call, call.end_cause)
    return replace(
        call,
        created_at=start,
        ring_s=round(ring_s, 3),
        talk_s=round(talk_s, 3),
        hold_s=round(hold_s, 3),
        wait_s=round(wait_s, 3),
        outcome=outcome,
    )


class CallFolder:
    """Incremental folding for a consumer: keeps the events of calls in flight.

    `add(event)` returns the call's new record, or None for a duplicate. Ended
    calls are kept for `keep_ended` more calls so that late events still fold
    (recording_ready after ended), then evicted; after eviction the caller
    reloads the call's events from the store (see cti.calls.pipeline).

    2,000 ended calls is about 20 MB of events, and 10 s of grace at 200 calls/s
    (late events are seconds late); 10,000 held 100 MB and took 8 minutes to fill at
    20 calls/s, which a soak saw as growth.
    """

    def __init__(self, keep_ended: int = 2_000) -> None:
        self._events: dict[str, dict[str, CallEvent]] = {}
        self._ended: dict[str, None] = {}
        self.keep_ended = keep_ended

    def known(self, call_id: str) -> bool:
        return call_id in self._events

    def load(self, call_id: str, events: Iterable[CallEvent]) -> None:
        self._events[call_id] = {e.event_id: e for e in events}

    def add(self, e: CallEvent) -> Call | None:
        evs = self._events.setdefault(e.call_id, {})
        if e.event_id in evs:
            return None
        evs[e.event_id] = e
        call = fold(evs.values())
        if call is not None and call.is_ended and e.call_id not in self._ended:
            self._ended[e.call_id] = None
            while len(self._ended) > self.keep_ended:
                old = next(iter(self._ended))
                del self._ended[old]
                self._events.pop(old, None)
        return call

    def add_many(self, events: Iterable[CallEvent]) -> Call | None:
        """Add several events of ONE call and fold once (what a batch consumer wants).

        Same result as `add` for each in turn, returning the last record; None when
        every event was a duplicate.
        """
        new = False
        evs: dict[str, CallEvent] | None = None
        call_id = None
        for e in events:
            if evs is None:
                call_id = e.call_id
                evs = self._events.setdefault(call_id, {})
            elif e.call_id != call_id:
                raise ValueError("add_many: events of more than one call")
            if e.event_id not in evs:
                evs[e.event_id] = e
                new = True
        if not new or evs is None or call_id is None:
            return None
        call = fold(evs.values())
        if call is not None and call.is_ended and call_id not in self._ended:
            self._ended[call_id] = None
            while len(self._ended) > self.keep_ended:
                old = next(iter(self._ended))
                del self._ended[old]
                self._events.pop(old, None)
        return call

    def active(self) -> list[str]:
        return [cid for cid in self._events if cid not in self._ended]
