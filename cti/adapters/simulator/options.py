"""Simulator options: parsing and validation of a `[[providers]] type = "simulator"` table.

Pure: `SimOptions.parse(options)` turns the free-form provider keys into a frozen,
validated value (a bad key raises ValueError naming it), and the draw helpers turn
a random generator plus those options into durations. The adapter does the I/O.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import phonenumbers

# A duration option is either [min, max] (uniform) or one number (exponential mean).
Duration = tuple[float, float] | float


def _num(name: str, value: Any, *, lo: float = 0.0, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"simulator option {name!r} must be a number, not {value!r}")
    v = float(value)
    if v < lo or (hi is not None and v > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"simulator option {name!r} must be {bound}, not {value!r}")
    return v


def _duration(name: str, value: Any) -> Duration:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"simulator option {name!r} must be [min, max] or a mean, not {value!r}")
        lo, hi = _num(name, value[0]), _num(name, value[1])
        if hi < lo:
            raise ValueError(f"simulator option {name!r}: max {hi} is below min {lo}")
        return (lo, hi)
    return _num(name, value)


def draw(rng: random.Random, d: Duration) -> float:
    """One duration: uniform over [min, max], or exponential around a mean."""
    if isinstance(d, tuple):
        return rng.uniform(d[0], d[1])
    return rng.expovariate(1.0 / d) if d > 0 else 0.0


def to_e164(number: str, region: str = "FR") -> str:
    """E.164 form of a dialable number; raises ValueError naming the number."""
    try:
        parsed = phonenumbers.parse(str(number), region)
    except phonenumbers.NumberParseException:
        raise ValueError(f"not a phone number: {number!r}") from None
    if not phonenumbers.is_possible_number(parsed):
        raise ValueError(f"not a possible phone number: {number!r}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _numbers(name: str, value: Any, region: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"simulator option {name!r} must be a list of phone numbers")
    try:
        return tuple(to_e164(str(v), region) for v in value)
    except ValueError as exc:
        raise ValueError(f"simulator option {name!r}: {exc}") from None


_KNOWN = {
    "arrival_rate_per_min", "seed", "answer_probability", "answer_delay_s", "talk_time_s",
    "patience_s", "hold_probability", "hold_time_s", "transfer_probability", "transfer_targets",
    "outbound_per_agent_per_hour", "record", "recording_files", "auto_answer", "auto_hangup",
    "customer_numbers", "unknown_caller_ratio", "customer_answer_probability",
    "customer_busy_probability", "customer_answer_delay_s", "busy_numbers", "no_answer_numbers",
    "caller_id", "play_s", "voicemail_drop_s", "dtmf_probability", "outbound_agents",
}


@dataclass(frozen=True, slots=True)
class SimOptions:
    """Validated simulator options (defaults make a lively small call centre)."""

    arrival_rate_per_min: float | dict[str, float] = 1.0   # per queue, or queue -> rate
    seed: int | None = None
    answer_probability: float = 0.9          # a simulated agent picks up a ringing call
    answer_delay_s: Duration = (2.0, 8.0)
    talk_time_s: Duration = (60.0, 300.0)
    patience_s: float = 90.0                 # mean caller patience while waiting (exponential)
    hold_probability: float = 0.15
    hold_time_s: Duration = (10.0, 45.0)
    transfer_probability: float = 0.05
    transfer_targets: tuple[str, ...] = ()   # blind-transfer targets; default: other queues' numbers
    outbound_per_agent_per_hour: float = 2.0
    outbound_agents: tuple[str, ...] | None = None  # who dials spontaneously (default: every agent)
    record: bool = False                     # record every answered call
    recording_files: tuple[str, ...] = ()    # WAV paths recording_ready points at, in turn
    auto_answer: bool = True                 # simulated agents answer Connect rings
    auto_hangup: bool = True                 # simulated customers end answered calls after talk time
    customer_numbers: tuple[str, ...] = ()   # E.164, callers drawn from these (plus unknowns)
    unknown_caller_ratio: float = 0.2
    customer_answer_probability: float = 0.7  # outbound: callee picks up
    customer_busy_probability: float = 0.1    # outbound: callee is busy
    customer_answer_delay_s: Duration = (3.0, 15.0)
    busy_numbers: tuple[str, ...] = ()        # outbound to these is always busy
    no_answer_numbers: tuple[str, ...] = ()   # outbound to these always rings out
    caller_id: str | None = None              # outbound presentation number
    play_s: float = 3.0                       # how long a Play lasts
    voicemail_drop_s: float = 8.0             # how long a dropped message plays
    dtmf_probability: float = 0.0             # callers key an IVR digit on arrival

    @classmethod
    def parse(cls, options: dict[str, Any], region: str = "FR") -> SimOptions:
        o = dict(options)
        unknown = sorted(set(o) - _KNOWN)
        if unknown:
            raise ValueError(f"unknown simulator option(s): {', '.join(unknown)}")
        kw: dict[str, Any] = {}
        rate = o.get("arrival_rate_per_min")
        if isinstance(rate, dict):
            kw["arrival_rate_per_min"] = {
                str(q): _num(f"arrival_rate_per_min.{q}", r) for q, r in rate.items()
            }
        elif rate is not None:
            kw["arrival_rate_per_min"] = _num("arrival_rate_per_min", rate)
        if o.get("seed") is not None:
            seed = o["seed"]
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ValueError(f"simulator option 'seed' must be an integer, not {seed!r}")
            kw["seed"] = seed
        for name in ("answer_probability", "hold_probability", "transfer_probability",
                     "unknown_caller_ratio", "customer_answer_probability",
                     "customer_busy_probability", "dtmf_probability"):
            if name in o:
                kw[name] = _num(name, o[name], hi=1.0)
        for name in ("answer_delay_s", "talk_time_s", "hold_time_s", "customer_answer_delay_s"):
            if name in o:
                kw[name] = _duration(name, o[name])
        for name in ("patience_s", "outbound_per_agent_per_hour", "play_s", "voicemail_drop_s"):
            if name in o:
                kw[name] = _num(name, o[name])
        for name in ("record", "auto_answer", "auto_hangup"):
            if name in o:
                if not isinstance(o[name], bool):
                    raise ValueError(f"simulator option {name!r} must be true or false")
                kw[name] = o[name]
        for name in ("customer_numbers", "busy_numbers", "no_answer_numbers"):
            if name in o:
                kw[name] = _numbers(name, o[name], region)
        if "transfer_targets" in o:
            if not isinstance(o["transfer_targets"], (list, tuple)):
                raise ValueError("simulator option 'transfer_targets' must be a list")
            kw["transfer_targets"] = tuple(str(t) for t in o["transfer_targets"])
        if o.get("outbound_agents") is not None:
            if not isinstance(o["outbound_agents"], (list, tuple)):
                raise ValueError("simulator option 'outbound_agents' must be a list of agent ids")
            kw["outbound_agents"] = tuple(str(a) for a in o["outbound_agents"])
        if "recording_files" in o:
            files = o["recording_files"]
            if isinstance(files, str):
                files = [files]
            if not isinstance(files, (list, tuple)):
                raise ValueError("simulator option 'recording_files' must be a path or a list of paths")
            kw["recording_files"] = tuple(str(f) for f in files)
        if o.get("caller_id") is not None:
            try:
                kw["caller_id"] = to_e164(str(o["caller_id"]), region)
            except ValueError as exc:
                raise ValueError(f"simulator option 'caller_id': {exc}") from None
        if kw.get("customer_answer_probability", 0.7) + kw.get("customer_busy_probability", 0.1) > 1.0:
            raise ValueError("simulator options customer_answer_probability + customer_busy_probability "
                             "must not exceed 1")
        return cls(**kw)

    def rate_for(self, queue: str) -> float:
        """Arrivals per minute into `queue`."""
        if isinstance(self.arrival_rate_per_min, dict):
            return self.arrival_rate_per_min.get(queue, 0.0)
        return self.arrival_rate_per_min
