"""The conformance scenarios every adapter must reproduce with its peer (or fake).

Each provider's test drives its peer through a scenario, collects the adapter's
`CallEvent`s for that call and checks `normalize(events) == EXPECTED[name]` and
`fold(events).outcome == OUTCOMES[name]`. Normalization drops provider ids and
times and keeps what the rest of the system relies on.

Agents are "alice" (answers) and "sam" (supervisor); the customer is +33612345678;
the queue "support" is entered by dialling +33170000100.
"""

from __future__ import annotations

from collections.abc import Iterable

from cti.calls.state import fold, order_key
from cti.model import CallEvent, EventKind, Outcome

CUSTOMER = "+33612345678"
QUEUE_NUMBER = "+33170000100"
QUEUE = "support"
AGENT = "alice"
SUPERVISOR = "sam"

Step = tuple[str, ...]


def normalize(events: Iterable[CallEvent]) -> list[Step]:
    """(kind, detail...) per event, in fold order, duplicates removed.

    Kept: created -> direction; queued -> queue; ringing/no_answer/answered -> agent;
    ended -> cause; transferred -> "transferred"; monitor_* -> mode; dtmf -> digit.
    Recording and playback steps keep only their kind.
    """
    seen: dict[str, CallEvent] = {}
    for e in events:
        seen.setdefault(e.event_id, e)
    out: list[Step] = []
    for e in sorted(seen.values(), key=order_key):
        k = e.kind
        if k is EventKind.CREATED:
            out.append((k.value, str(e.direction)))
        elif k is EventKind.QUEUED:
            out.append((k.value, e.queue or ""))
        elif k in (EventKind.RINGING, EventKind.NO_ANSWER, EventKind.ANSWERED):
            out.append((k.value, e.agent or ""))
        elif k is EventKind.ENDED:
            out.append((k.value, str(e.data.get("cause", "normal"))))
        elif k in (EventKind.MONITOR_STARTED, EventKind.MONITOR_STOPPED):
            out.append((k.value, str(e.data.get("mode", ""))))
        elif k is EventKind.DTMF:
            out.append((k.value, str(e.data.get("digit", ""))))
        elif k is EventKind.AGENT_STATE_CHANGED:
            continue
        else:
            out.append((k.value,))
    return out


_IN = [("created", "inbound"), ("queued", QUEUE), ("ringing", AGENT)]

# ended causes accepted as "someone hung up normally" are unified to "normal" by adapters;
# a caller who leaves before any answer is "caller_hangup".
EXPECTED: dict[str, list[Step]] = {
    "inbound_answered": [*_IN, ("answered", AGENT), ("ended", "normal")],
    "inbound_not_answered": [*_IN, ("no_answer", AGENT), ("ended", "caller_hangup")],
    "caller_hangup_while_queued": [("created", "inbound"), ("queued", QUEUE), ("ended", "caller_hangup")],
    "click_to_call_answered": [("created", "outbound"), ("ringing", AGENT), ("answered", AGENT),
                               ("ended", "normal")],
    "busy": [("created", "outbound"), ("ringing", AGENT), ("ended", "busy")],
    "hold_unhold": [*_IN, ("answered", AGENT), ("held",), ("resumed",), ("ended", "normal")],
    "blind_transfer": [*_IN, ("answered", AGENT), ("transferred",), ("ended", "transferred")],
    "recording_ready": [*_IN, ("answered", AGENT), ("recording_started",), ("recording_stopped",),
                        ("ended", "normal"), ("recording_ready",)],
    "supervisor_whisper": [*_IN, ("answered", AGENT), ("monitor_started", "whisper"),
                           ("monitor_stopped", "whisper"), ("ended", "normal")],
}

OUTCOMES: dict[str, Outcome] = {
    "inbound_answered": Outcome.ANSWERED,
    "inbound_not_answered": Outcome.ABANDONED,
    "caller_hangup_while_queued": Outcome.ABANDONED,
    "click_to_call_answered": Outcome.ANSWERED,
    "busy": Outcome.BUSY,
    "hold_unhold": Outcome.ANSWERED,
    "blind_transfer": Outcome.ANSWERED,
    "recording_ready": Outcome.ANSWERED,
    "supervisor_whisper": Outcome.ANSWERED,
}


def check(name: str, events: list[CallEvent]) -> None:
    """Assert one scenario; the message shows both sequences."""
    got = normalize(events)
    assert got == EXPECTED[name], f"{name}:\n got      {got}\n expected {EXPECTED[name]}"
    call = fold(events)
    assert call is not None and call.outcome == OUTCOMES[name], f"{name}: outcome {call and call.outcome}"
    assert len({e.call_id for e in events}) == 1, f"{name}: events span several call ids"
