"""Report parameters: time range, bucket and filters, validated at the edge.

`parse_query` turns HTTP query strings or CLI options into a `StatsQuery`;
a bad value raises `ParamError` naming the parameter (the API answers 422).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from cti.config import Settings

BUCKETS = ("hour", "day", "week")
DIRECTIONS = ("inbound", "outbound", "internal")
MAX_RANGE_DAYS = 800
MAX_BUCKETS = 20_000


class ParamError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class StatsQuery:
    start: datetime                      # UTC, inclusive
    end: datetime                        # UTC, exclusive
    tz: ZoneInfo
    tenant: str = "default"
    bucket: str = "day"
    agents: frozenset[str] | None = None  # None: no agent filter
    team: str | None = None
    queue: str | None = None
    direction: str | None = None

    def with_agents(self, agents: frozenset[str] | None) -> StatsQuery:
        return replace(self, agents=agents)

    def describe(self) -> dict[str, object]:
        return {
            "from": self.start.astimezone(self.tz).isoformat(),
            "to": self.end.astimezone(self.tz).isoformat(),
            "timezone": self.tz.key,
            "bucket": self.bucket,
            "agent": sorted(self.agents) if self.agents is not None else None,
            "team": self.team,
            "queue": self.queue,
            "direction": self.direction,
        }


def parse_instant(value: str, tz: ZoneInfo, field: str, end_of_day: bool = False) -> datetime:
    """ISO date (site-local midnight; for `to`, the end of that day) or ISO datetime.

    A datetime without an offset is read in the site's time zone.
    """
    v = value.strip()
    try:
        if len(v) == 10:
            d = date.fromisoformat(v)
            if end_of_day:
                d += timedelta(days=1)
            return datetime(d.year, d.month, d.day, tzinfo=tz).astimezone(ZoneInfo("UTC"))
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise ParamError(field, f"{value!r} is not an ISO date (YYYY-MM-DD) or datetime") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return dt.astimezone(ZoneInfo("UTC"))


def parse_query(params: Mapping[str, str], settings: Settings, now: datetime) -> StatsQuery:
    """Validate the common stats parameters. Defaults: the last 7 days up to now, bucket=day."""
    tz = ZoneInfo(settings.site.timezone)
    utc = ZoneInfo("UTC")
    end = parse_instant(params["to"], tz, "to", end_of_day=True) if params.get("to") else now.astimezone(utc)
    if params.get("from"):
        start = parse_instant(params["from"], tz, "from")
    else:
        local = (end - timedelta(days=7)).astimezone(tz)
        start = local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(utc)
    if start >= end:
        raise ParamError("from", "must be before 'to'")
    if end - start > timedelta(days=MAX_RANGE_DAYS):
        raise ParamError("from", f"range is longer than {MAX_RANGE_DAYS} days")
    bucket = params.get("bucket") or "day"
    if bucket not in BUCKETS:
        raise ParamError("bucket", f"must be one of {', '.join(BUCKETS)}, not {bucket!r}")
    per = {"hour": 3600, "day": 86400, "week": 7 * 86400}[bucket]
    if (end - start).total_seconds() / per > MAX_BUCKETS:
        raise ParamError("bucket", f"more than {MAX_BUCKETS} {bucket} buckets in this range")
    direction = params.get("direction") or None
    if direction is not None and direction not in DIRECTIONS:
        raise ParamError("direction", f"must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
    agents = None
    if params.get("agent"):
        names = [a.strip() for a in params["agent"].split(",") if a.strip()]
        if not names:
            raise ParamError("agent", "is empty")
        agents = frozenset(names)
    team = params.get("team") or None
    queue = params.get("queue") or None
    for field, val in (("agent", params.get("agent")), ("team", team), ("queue", queue)):
        if val is not None and len(val) > 512:
            raise ParamError(field, "is too long")
    if queue == "*" or (agents is not None and "*" in agents):
        raise ParamError("queue" if queue == "*" else "agent", "'*' is reserved (the rollups' all-rows marker)")
    return StatsQuery(start=start, end=end, tz=tz, tenant=settings.site.tenant, bucket=bucket,
                      agents=agents, team=team, queue=queue, direction=direction)
