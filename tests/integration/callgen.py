"""Realistic call event sequences for pipeline tests and benchmarks (deterministic per seed)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from cti.model import CallEvent, Direction, EndCause, EventKind, make_call_id, make_event_id

PROVIDER = "sim"
AGENTS = ("alice", "bob", "carol", "dave")
QUEUES = ("sales", "support")


def call_events(n: int, *, seed: int = 0, tenant: str = "default", start: datetime | None = None) -> list[CallEvent]:
    """The events of call number `n`: answered, abandoned, missed, busy or transferred, with holds."""
    rng = random.Random(seed * 1_000_003 + n)
    t = (start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)) + timedelta(seconds=n * 7)
    pcid = f"pbx-{seed}-{n}"
    call_id = make_call_id(tenant, PROVIDER, pcid)
    inbound = rng.random() < 0.8
    direction = Direction.INBOUND if inbound else Direction.OUTBOUND
    caller = f"+3314{n % 10_000_000:07d}"
    callee = "+33180000000" if inbound else f"+4420{n % 10_000_000:07d}"
    queue = rng.choice(QUEUES) if inbound else None
    seq = 0
    out: list[CallEvent] = []

    def ev(kind: EventKind, dt: float, **kw) -> None:
        nonlocal t, seq
        t += timedelta(seconds=dt)
        seq += 1
        out.append(CallEvent(
            event_id=make_event_id(PROVIDER, pcid, seq, kind), provider=PROVIDER, provider_call_id=pcid,
            call_id=call_id, kind=kind, occurred_at=t, seq=seq, tenant=tenant, direction=direction,
            from_number=caller if inbound else callee, to_number=callee if inbound else caller,
            queue=queue, **kw,
        ))

    ev(EventKind.CREATED, 0)
    if queue:
        ev(EventKind.QUEUED, 0.2)
    fate = rng.random()
    agent = rng.choice(AGENTS)
    if queue and fate < 0.15:  # caller gives up in the queue
        ev(EventKind.ENDED, rng.uniform(5, 60), data={"cause": EndCause.CALLER_HANGUP})
        return out
    ev(EventKind.RINGING, rng.uniform(1, 20), agent=agent)
    if fate < 0.3:  # first agent does not answer, a second one does
        ev(EventKind.NO_ANSWER, rng.uniform(5, 15), agent=agent, data={"reason": "timeout"})
        agent = rng.choice([a for a in AGENTS if a != agent])
        ev(EventKind.RINGING, 0.5, agent=agent)
    if fate > 0.93:
        ev(EventKind.ENDED, rng.uniform(2, 20), data={"cause": EndCause.BUSY if not inbound else EndCause.NO_ANSWER})
        return out
    ev(EventKind.ANSWERED, rng.uniform(1, 10), agent=agent)
    ev(EventKind.RECORDING_STARTED, 0.1, data={"recording": f"rec-{pcid}"})
    if rng.random() < 0.3:
        ev(EventKind.HELD, rng.uniform(10, 60), agent=agent)
        ev(EventKind.RESUMED, rng.uniform(5, 40), agent=agent)
    if rng.random() < 0.1:
        ev(EventKind.TRANSFERRED, rng.uniform(5, 30), agent=agent, data={"target": "+33100000000"})
        ev(EventKind.ENDED, 1, data={"cause": EndCause.TRANSFERRED})
    else:
        ev(EventKind.ENDED, rng.uniform(20, 300), data={"cause": EndCause.NORMAL})
    ev(EventKind.RECORDING_READY, 2, data={"url": f"file:///rec/{pcid}.wav"})
    return out


def many_calls(count: int, *, seed: int = 0, start_at: int = 0) -> list[list[CallEvent]]:
    return [call_events(n, seed=seed) for n in range(start_at, start_at + count)]


def interleaved(calls: list[list[CallEvent]], *, seed: int = 0, window: int = 50) -> list[CallEvent]:
    """Events of many calls mixed as a PBX would emit them (each call's own order kept)."""
    rng = random.Random(seed)
    out: list[CallEvent] = []
    for start in range(0, len(calls), window):
        group = [list(c) for c in calls[start : start + window]]
        while group:
            i = rng.randrange(len(group))
            out.append(group[i].pop(0))
            if not group[i]:
                group.pop(i)
    return out
