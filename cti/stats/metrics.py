"""Metric definitions: pure functions over call records and agent-state intervals.

Every formula is written out in docs/metrics.md; this module is the one place
that implements them. The rollup (cti.stats.aggregate) stores the additive
parts per hour x queue x agent x direction (`call_deltas`), and the reports
(cti.stats.report) turn summed parts into ratios (`derive_agent`, `derive_queue`).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cti.model import Call

# stats_hourly rows under this agent hold every call of their (hour, queue, direction), whoever
# handled it: queue-level reports read only these, so their cost does not grow with the number
# of agents. Agent-level reports skip them. (No agent id may be "*".)
ALL_AGENTS = "*"
# Likewise, rows under this queue hold each agent's calls across all queues: the agents
# report reads only these, so its cost does not grow with the number of queues.
ALL_QUEUES = "*"

# The additive columns of stats_hourly, in table order.
COUNT_FIELDS = ("offered", "answered", "missed", "abandoned", "short_abandoned", "answered_in_sl")
SUM_FIELDS = ("talk_s", "hold_s", "ring_s", "wait_s", "wait_answered_s")
MAX_FIELDS = ("max_wait_s",)
ROLLUP_FIELDS = COUNT_FIELDS + SUM_FIELDS + MAX_FIELDS

# Agent states that count as logged in / as working on calls (see docs/metrics.md).
LOGGED_IN_STATES = ("available", "ringing", "on_call", "wrap_up", "away")
STAFFED_STATES = ("available", "ringing", "on_call", "wrap_up")
BUSY_STATES = ("ringing", "on_call", "wrap_up")


def row_of(call: Call | Mapping[str, Any]) -> dict[str, Any]:
    """A call as a plain dict with the calls-table column names (enums as strings)."""
    if isinstance(call, Call):
        out: dict[str, Any] = {}
        for f in fields(call):
            v = getattr(call, f.name)
            out[f.name] = str(v) if isinstance(v, StrEnum) else v
        return out
    return dict(call)


def hour_of(at: datetime) -> datetime:
    """The UTC hour a timestamp falls in (rollup key)."""
    return at.replace(minute=0, second=0, microsecond=0)


def call_start(row: Mapping[str, Any]) -> datetime | None:
    """The instant a call is counted at: its creation (falls back to the first known time)."""
    return row.get("created_at") or row.get("queued_at") or row.get("ringing_at") or row.get("ended_at")


@dataclass(frozen=True, slots=True)
class RollupDelta:
    """What one ended call adds to one stats_hourly row."""

    hour: datetime
    queue: str
    agent: str
    direction: str
    offered: int = 0
    answered: int = 0
    missed: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    answered_in_sl: int = 0
    talk_s: float = 0.0
    hold_s: float = 0.0
    ring_s: float = 0.0
    wait_s: float = 0.0
    wait_answered_s: float = 0.0
    max_wait_s: float = 0.0

    def key(self) -> tuple[datetime, str, str, str]:
        return (self.hour, self.queue, self.agent, self.direction)

    def values(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in ROLLUP_FIELDS}


def handling_agent(row: Mapping[str, Any]) -> str:
    """The agent a call's counts go to: who answered it, or who placed an outbound call.

    Unanswered inbound calls belong to no agent ("") - the agents they rang at
    each get a `missed` instead.
    """
    agent = row.get("agent") or ""
    if row.get("outcome") == "answered" or row.get("direction") == "outbound":
        return agent
    return ""


def missed_agents(row: Mapping[str, Any]) -> list[str]:
    """Agents a call rang at who did not answer it (inbound/internal calls only)."""
    if row.get("direction") == "outbound":
        return []
    answered_by = row.get("agent") if row.get("outcome") == "answered" else None
    out: list[str] = []
    for a in row.get("agents_rung") or ():
        if a and a != answered_by and a not in out:
            out.append(a)
    return out


def call_deltas(call: Call | Mapping[str, Any], service_level_s: float,
                short_abandon_s: float) -> list[RollupDelta]:
    """The rollup increments of one ended call. Pure; the rollup applies them once per call.

    One main row (offered=1) under the handling agent, one `missed=1` row per agent
    that was rung and did not answer, the same call once more in the ALL_AGENTS row
    (main row values, missed = number of agents who missed it), and each agent row
    once more under ALL_QUEUES.
    """
    row = row_of(call)
    start = call_start(row)
    if start is None:
        raise ValueError(f"call {row.get('call_id')} has no timestamp")
    hour = hour_of(start)
    queue = row.get("queue") or ""
    direction = row.get("direction") or "inbound"
    outcome = row.get("outcome")
    answered = outcome == "answered"
    wait = float(row.get("wait_s") or 0.0)
    abandoned = outcome == "abandoned"
    main = RollupDelta(
        hour=hour,
        queue=queue,
        agent=handling_agent(row),
        direction=direction,
        offered=1,
        answered=int(answered),
        abandoned=int(abandoned),
        short_abandoned=int(abandoned and wait < short_abandon_s),
        answered_in_sl=int(answered and direction != "outbound" and wait <= service_level_s),
        talk_s=float(row.get("talk_s") or 0.0),
        hold_s=float(row.get("hold_s") or 0.0),
        ring_s=float(row.get("ring_s") or 0.0),
        wait_s=wait,
        wait_answered_s=wait if answered else 0.0,
        max_wait_s=wait,
    )
    out = [main]
    missed = missed_agents(row)
    for a in missed:
        out.append(RollupDelta(hour=hour, queue=queue, agent=a, direction=direction, missed=1))
    out.append(replace(main, agent=ALL_AGENTS, missed=len(missed)))
    out += [replace(d, queue=ALL_QUEUES) for d in out if d.agent and d.agent != ALL_AGENTS]
    return out


def empty_sums() -> dict[str, float]:
    return {f: 0 for f in ROLLUP_FIELDS}


def add_sums(acc: dict[str, float], row: Mapping[str, Any]) -> dict[str, float]:
    """Fold one rollup row (or delta values) into an accumulator, in place."""
    for f in COUNT_FIELDS + SUM_FIELDS:
        acc[f] = acc.get(f, 0) + (row.get(f) or 0)
    for f in MAX_FIELDS:
        acc[f] = max(acc.get(f, 0), row.get(f) or 0)
    return acc


def sums_of_calls(calls: Iterable[Call | Mapping[str, Any]], service_level_s: float = 20.0,
                  short_abandon_s: float = 5.0) -> dict[tuple, dict[str, float]]:
    """Raw-path equivalent of the rollup: deltas of every call summed by key."""
    out: dict[tuple, dict[str, float]] = {}
    for c in calls:
        for d in call_deltas(c, service_level_s, short_abandon_s):
            add_sums(out.setdefault(d.key(), empty_sums()), d.values())
    return out


def _ratio(num: float, den: float, digits: int = 4) -> float | None:
    return round(num / den, digits) if den else None


def _mean(total: float, n: float) -> float | None:
    return round(total / n, 3) if n else None


def median(values: Iterable[float]) -> float | None:
    vals = list(values)
    return round(float(statistics.median(vals)), 3) if vals else None


# Not rollup columns: read from the callbacks table at report time (the call record does not
# say whether its caller asked for a callback), then added to the summed parts.
KEPT = "kept_for_callback"
KEPT_SHORT = "kept_for_callback_short"


def add_kept_for_callback(acc: dict[str, float], wait_s: float, short_abandon_s: float) -> dict[str, float]:
    """Count one abandoned call whose caller had asked for a callback (see `derive_queue`), in place."""
    acc[KEPT] = acc.get(KEPT, 0) + 1
    acc[KEPT_SHORT] = acc.get(KEPT_SHORT, 0) + int(wait_s < short_abandon_s)
    return acc


def derive_queue(s: Mapping[str, float]) -> dict[str, Any]:
    """Queue indicators from summed inbound rollup parts (docs/metrics.md, "Per queue").

    A caller who asked for a callback and then hung up kept their place in the queue: as in
    Amazon Connect ("contacts queued for callback are not counted as abandoned"), such a call
    is `kept_for_callback`, not abandoned. It stays in the service-level denominator (it was
    not answered within the threshold) unless it left as quickly as a short abandon.
    """
    offered = int(s.get("offered", 0))
    short_all = int(s.get("short_abandoned", 0))
    abandoned_all = int(s.get("abandoned", 0))
    kept, kept_short = int(s.get(KEPT, 0)), int(s.get(KEPT_SHORT, 0))
    answered = int(s.get("answered", 0))
    counted = offered - short_all  # service-level and abandon-rate denominator
    abandoned = abandoned_all - short_all - (kept - kept_short)
    return {
        "offered": offered,
        "answered": answered,
        "abandoned": abandoned,
        "short_abandoned": short_all - kept_short,
        "kept_for_callback": kept,
        "not_answered": offered - answered,
        "answered_in_sl": int(s.get("answered_in_sl", 0)),
        "service_level": _ratio(s.get("answered_in_sl", 0), counted),
        "abandon_rate": _ratio(abandoned, counted),
        "answer_rate": _ratio(answered, offered),
        "asa_s": _mean(s.get("wait_answered_s", 0.0), answered),
        "longest_wait_s": round(float(s.get("max_wait_s", 0.0)), 3),
        "talk_s": round(float(s.get("talk_s", 0.0)), 3),
    }


def state_durations(intervals: Iterable[Mapping[str, Any]], start: datetime, end: datetime,
                    now: datetime) -> dict[str, float]:
    """Seconds spent in each state within [start, end), from agent_state_log rows.

    An interval with no ended_at is still open: it counts up to `now`.
    """
    out: dict[str, float] = {}
    for iv in intervals:
        s = max(iv["started_at"], start)
        e = min(iv.get("ended_at") or now, end, now)
        if e > s:
            out[iv["state"]] = out.get(iv["state"], 0.0) + (e - s).total_seconds()
    return {k: round(v, 3) for k, v in out.items()}


# A wrap-up spell starts when the agent's call ends; clocks of the PBX and of the router may
# disagree by a little, so a call that ended up to this long after the spell began still owns it.
WRAP_UP_CLOCK_SKEW = timedelta(seconds=2)


def wrap_up_owner(started_at: datetime, ended_calls: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The call a wrap-up spell follows: the agent's call that ended last before it began.

    ended_calls: the agent's answered calls, sorted by `ended_at`.
    """
    owner = None
    for c in ended_calls:
        if c["ended_at"] > started_at + WRAP_UP_CLOCK_SKEW:
            break
        owner = c
    return owner


def keep_wrap_up_of(intervals: Iterable[Mapping[str, Any]], ended_calls: list[Mapping[str, Any]],
                    keep: Any) -> list[Mapping[str, Any]]:
    """An agent's state spells, less the wrap-up spells that follow a call `keep(call)` rejects.

    With a queue or direction filter, after-call work belongs to the call it follows (as in
    Amazon Connect, where ACW is per contact): a queue's AHT must not include the wrap-up of
    the agent's calls from other queues. A wrap-up spell with no known call is dropped.
    """
    out = []
    for iv in intervals:
        if iv["state"] == "wrap_up":
            owner = wrap_up_owner(iv["started_at"], ended_calls)
            if owner is None or not keep(owner):
                continue
        out.append(iv)
    return out


def derive_agent(inbound: Mapping[str, float], outbound: Mapping[str, float],
                 states: Mapping[str, float], talk_median_s: float | None) -> dict[str, Any]:
    """Agent indicators (docs/metrics.md, "Per agent").

    inbound: summed rollup parts of inbound+internal rows; outbound: of outbound rows.
    states: seconds per agent state in the period.
    """
    handled_in = int(inbound.get("answered", 0))
    handled_out = int(outbound.get("answered", 0))
    handled = handled_in + handled_out
    talk = float(inbound.get("talk_s", 0.0)) + float(outbound.get("talk_s", 0.0))
    hold = float(inbound.get("hold_s", 0.0)) + float(outbound.get("hold_s", 0.0))
    wrap = float(states.get("wrap_up", 0.0))
    logged_in = sum(float(states.get(s, 0.0)) for s in LOGGED_IN_STATES)
    staffed = sum(float(states.get(s, 0.0)) for s in STAFFED_STATES)
    busy = sum(float(states.get(s, 0.0)) for s in BUSY_STATES)
    return {
        "handled": handled,
        "handled_inbound": handled_in,
        "handled_outbound": handled_out,
        "outbound_attempts": int(outbound.get("offered", 0)),
        "missed": int(inbound.get("missed", 0)),
        "talk_s": round(talk, 3),
        "talk_mean_s": _mean(talk, handled),
        "talk_median_s": talk_median_s,
        "hold_s": round(hold, 3),
        "wrap_up_s": round(wrap, 3),
        "aht_s": _mean(talk + hold + wrap, handled),
        "occupancy": _ratio(busy, staffed),
        "logged_in_s": round(logged_in, 3),
        "states": {k: round(float(v), 3) for k, v in sorted(states.items())},
    }


def weekday_hour(at: datetime, tz: Any) -> tuple[int, int]:
    """(weekday 0=Monday, hour 0-23) of an instant in the site's time zone."""
    local = at.astimezone(tz)
    return local.weekday(), local.hour


def bucket_start(at: datetime, bucket: str, tz: Any) -> datetime:
    """Start of the hour/day/week (Monday) containing `at`, in the site's time zone."""
    local = at.astimezone(tz)
    if bucket == "hour":
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    if bucket == "week":
        day -= timedelta(days=day.weekday())
    if bucket not in ("day", "week"):
        raise ValueError(f"unknown bucket {bucket!r}")
    return day.replace(tzinfo=tz)
