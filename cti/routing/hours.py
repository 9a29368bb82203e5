"""Business hours and holidays per queue, in the site's time zone.

    "Mon-Fri 08:30-18:00"
    "Mon-Fri 08:30-12:30,13:30-18:00; Sat 09:00-12:00"
    "Mon,Wed,Fri 22:00-06:00"       (overnight: open from 22:00 until 06:00 the next day)
    "24/7"                          (always open; None means the same)

Holidays are ISO dates ("2026-12-25"); the queue is closed all that (local) day,
including the morning part of an overnight range that started the evening before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

_DAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_RANGE = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


class HoursError(ValueError):
    """Business hours or a holiday that does not parse (message says which part)."""


@dataclass(frozen=True, slots=True)
class Hours:
    """Opening ranges as (weekday, start_minute, end_minute) with end <= 1440, plus holidays."""

    ranges: tuple[tuple[int, int, int], ...]
    holidays: frozenset[date]
    always: bool = False

    def is_open(self, local: datetime) -> bool:
        """`local` must already be in the site's time zone."""
        if local.date() in self.holidays:
            return False
        if self.always:
            return True
        wd = local.weekday()
        minute = local.hour * 60 + local.minute
        return any(d == wd and start <= minute < end for d, start, end in self.ranges)


def _days(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip().lower()
        if "-" in part:
            a, _, b = part.partition("-")
            if a[:3] not in _DAYS or b[:3] not in _DAYS:
                raise HoursError(f"unknown day in {part!r} (use Mon, Tue, Wed, Thu, Fri, Sat, Sun)")
            i, j = _DAYS[a[:3]], _DAYS[b[:3]]
            out.extend((i + k) % 7 for k in range((j - i) % 7 + 1))
        else:
            if part[:3] not in _DAYS:
                raise HoursError(f"unknown day {part!r} (use Mon, Tue, Wed, Thu, Fri, Sat, Sun)")
            out.append(_DAYS[part[:3]])
    return out


def parse_hours(spec: str | None, holidays: list[str] | tuple[str, ...] = ()) -> Hours:
    """Parse hours + holidays; raise HoursError naming the bad part."""
    hols: set[date] = set()
    for h in holidays:
        try:
            hols.add(date.fromisoformat(str(h).strip()))
        except ValueError:
            raise HoursError(f"holiday {h!r} is not an ISO date (YYYY-MM-DD)") from None
    if spec is None or spec.strip().lower() in ("", "24/7", "always"):
        return Hours((), frozenset(hols), always=True)
    ranges: list[tuple[int, int, int]] = []
    for chunk in spec.split(";"):
        chunk = chunk.strip()
        if not chunk:
            continue
        days_part, _, times_part = chunk.partition(" ")
        if not times_part.strip():
            raise HoursError(f"{chunk!r}: expected '<days> HH:MM-HH:MM', e.g. 'Mon-Fri 08:30-18:00'")
        days = _days(days_part)
        for t in times_part.replace(" ", "").split(","):
            m = _RANGE.match(t)
            if not m:
                raise HoursError(f"{chunk!r}: time range {t!r} is not HH:MM-HH:MM")
            h1, m1, h2, m2 = (int(x) for x in m.groups())
            if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59 or h1 * 60 + m1 > 1440 or h2 * 60 + m2 > 1440:
                raise HoursError(f"{chunk!r}: time {t!r} is out of range")
            start, end = h1 * 60 + m1, h2 * 60 + m2
            if start == end:
                raise HoursError(f"{chunk!r}: range {t!r} is empty")
            for d in days:
                if start < end:
                    ranges.append((d, start, end))
                else:  # overnight: evening of day d, morning of day d+1
                    ranges.append((d, start, 1440))
                    if end:
                        ranges.append(((d + 1) % 7, 0, end))
    if not ranges:
        raise HoursError(f"{spec!r}: no opening range")
    return Hours(tuple(ranges), frozenset(hols))


def is_open(hours: Hours, ts: float, tz: ZoneInfo) -> bool:
    """Is the queue open at epoch seconds `ts`, in time zone `tz`?"""
    if hours.always and not hours.holidays:
        return True
    return hours.is_open(datetime.fromtimestamp(ts, tz))
