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
from dataclasses import MISSING, fields
from datetime import datetime
from typing import Any

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


def outcome_for(*, answered: bool, direction: Direction, queue: str | None, cause: str | None) -> Outcome:
    """Outcome of a call that just ended. Pure; documented in docs/metrics.md."""
    if cause == EndCause.VOICEMAIL:
        return Outcome.VOICEMAIL
    if answered:
        return Outcome.ANSWERED
    if cause == EndCause.BUSY:
        return Outcome.BUSY
    if cause == EndCause.FAILED:
        return Outcome.FAILED
    if direction is Direction.OUTBOUND:
        return Outcome.CANCELED if cause == EndCause.CANCELED else Outcome.MISSED
    # inbound / internal, never answered: waiting in a queue -> abandoned; else missed
    if queue is not None and cause in (None, EndCause.CALLER_HANGUP, EndCause.NORMAL, EndCause.CANCELED):
        return Outcome.ABANDONED
    if cause == EndCause.CANCELED and queue is None:
        return Outcome.MISSED
    return Outcome.MISSED


def _new_call(e: CallEvent) -> dict[str, Any]:
    """The working record of a call's first event: `Call`'s fields, as a dict."""
    rec = dict(_BLANK)
    rec.update(call_id=e.call_id, tenant=e.tenant, provider=e.provider, provider_call_id=e.provider_call_id,
               direction=e.direction or Direction.INBOUND, state=CallState.NEW)
    return rec


# Folding mutates one plain dict per call and builds the frozen `Call` once at the end:
# `dataclasses.replace` per event (twice, with `_fill`) was most of the store fold's CPU,
# and the fold runs on the event loop, where every 0.1 ms delays screen pops.
_BLANK: dict[str, Any] = {f.name: f.default for f in fields(Call) if f.default is not MISSING}


def _fill(c: dict[str, Any], e: CallEvent) -> None:
    """Facts any event may carry (numbers, direction, queue) fill blanks, never overwrite."""
    if e.direction is not None and c["created_at"] is None:
        c["direction"] = e.direction
    if e.from_number and not c["from_number"]:
        c["from_number"] = e.from_number
    if e.to_number and not c["to_number"]:
        c["to_number"] = e.to_number
    if e.queue and not c["queue"]:
        c["queue"] = e.queue


def _apply(c: dict[str, Any], e: CallEvent) -> None:
    """Apply one event to the working record, assuming events arrive in `order_key` order."""
    _fill(c, e)
    k = e.kind
    at = e.occurred_at
    c["events"] += 1
    c["last_event_at"] = at
    state = c["state"]
    ready = c["recording_state"] == "ready"

    if k is EventKind.RECORDING_READY:
        c["recording"] = e.data.get("url") or e.data.get("path") or e.data.get("recording") or c["recording"]
        c["recording_state"] = "ready"
    elif k is EventKind.RECORDING_STARTED and not ready:
        c["recording_state"] = "recording"
        c["recording"] = e.data.get("recording") or c["recording"]
    elif k is EventKind.RECORDING_PAUSED and not ready:
        c["recording_state"] = "paused"
    elif k is EventKind.RECORDING_RESUMED and not ready:
        c["recording_state"] = "recording"
    elif k is EventKind.RECORDING_STOPPED and not ready:
        c["recording_state"] = "stopped"
    elif state is CallState.ENDED:
        pass  # a terminal state is never undone
    elif k is EventKind.CREATED:
        c["created_at"] = c["created_at"] or at
        if e.direction is not None:
            c["direction"] = e.direction
    elif k is EventKind.QUEUED:
        c["queued_at"] = c["queued_at"] or at
        if state is CallState.NEW:
            c["state"] = CallState.QUEUED
    elif k is EventKind.RINGING:
        c["ringing_at"] = c["ringing_at"] or at
        if e.agent and e.agent not in c["agents_rung"]:
            c["agents_rung"] = (*c["agents_rung"], e.agent)
        if c["answered_at"] is None:
            c["state"] = CallState.RINGING
            if e.agent:
                c["agent"] = e.agent
    elif k is EventKind.NO_ANSWER:
        # back to waiting unless another agent still rings (ring-all) or it was answered
        if c["answered_at"] is None and state is CallState.RINGING and c["queue"]:
            c["state"] = CallState.QUEUED
    elif k is EventKind.ANSWERED:
        if c["answered_at"] is None:
            c["answered_at"] = at
            c["state"] = CallState.ANSWERED
            if e.agent:
                c["agent"] = e.agent
    elif k is EventKind.HELD:
        if state is CallState.ANSWERED:
            c["state"] = CallState.HELD
    elif k is EventKind.RESUMED:
        if state is CallState.HELD:
            c["state"] = CallState.ANSWERED
    elif k is EventKind.TRANSFERRED:
        c["transferred_to"] = e.data.get("target") or e.agent or c["transferred_to"]
        if e.agent and c["answered_at"] is not None:
            c["agent"] = e.agent
    elif k is EventKind.ENDED:
        c["state"] = CallState.ENDED
        c["ended_at"] = at
        c["end_cause"] = e.data.get("cause") or EndCause.NORMAL


def fold(events: Iterable[CallEvent]) -> Call | None:
    """Fold a call's events (any order, duplicates allowed) into its record."""
    unique: dict[str, CallEvent] = {}
    for e in events:
        unique.setdefault(e.event_id, e)
    if not unique:
        return None
    ordered = sorted(unique.values(), key=order_key)
    rec = _new_call(ordered[0])
    hold_s = 0.0
    held_since: datetime | None = None
    for e in ordered:
        before = rec["state"]
        _apply(rec, e)
        after = rec["state"]
        # hold time: intervals between held and resumed (or the end) while answered
        if before is CallState.ANSWERED and after is CallState.HELD:
            held_since = e.occurred_at
        elif held_since is not None and after is not CallState.HELD:
            hold_s += _secs(held_since, e.occurred_at)
            held_since = None
    return _finish(rec, hold_s)


def _finish(c: dict[str, Any], hold_s: float) -> Call:
    """Derived fields: durations and outcome (only meaningful once ended)."""
    # queue entry from the created event only: a call first seen ringing never waited in a queue
    queue_entry = c["queued_at"] or (c["created_at"] if c["queue"] else None)
    c["created_at"] = c["created_at"] or c["queued_at"] or c["ringing_at"] or c["answered_at"]
    if c["state"] is not CallState.ENDED:
        c["hold_s"] = hold_s
        return Call(**c)
    ended = c["ended_at"]
    answered = c["answered_at"]
    ring_from = c["ringing_at"]
    ring_s = _secs(ring_from, answered or ended) if ring_from else 0.0
    talk_s = max(0.0, _secs(answered, ended) - hold_s) if answered else 0.0
    wait_s = _secs(queue_entry, answered or ended) if queue_entry else 0.0
    c.update(ring_s=round(ring_s, 3), talk_s=round(talk_s, 3), hold_s=round(hold_s, 3), wait_s=round(wait_s, 3),
             outcome=outcome_for(answered=answered is not None, direction=c["direction"], queue=c["queue"],
                                 cause=c["end_cause"]))
    return Call(**c)


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
