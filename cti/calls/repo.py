"""Call persistence: idempotent, batched writes of events and call records.

- `insert_events` stores facts once (ON CONFLICT (event_id) DO NOTHING), so a
  redelivered batch is harmless.
- `upsert_calls` writes the fold-derived columns of `calls` only; columns that
  other stages own (contact, priority, disposition, notes, error) are never
  touched by an update. A row is never replaced by the fold of fewer events,
  so a stale writer cannot roll a call back.
Every write is one round trip per chunk of rows: one multi-row statement on PostgreSQL
(SQLAlchemy's "insertmanyvalues": one cached compilation, rows paged under the parameter
limit), the driver's executemany on SQLite.
Datetimes are stored and returned as UTC (SQLite keeps them naive: we re-attach UTC).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Select, bindparam, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from cti.model import Call, CallEvent
from cti.store.db import Database, dialect_insert
from cti.store.tables import call_events, calls

# Columns computed by cti.calls.state.fold: the only ones an upsert may overwrite.
FOLD_COLUMNS: tuple[str, ...] = (
    "tenant", "provider", "provider_call_id", "direction", "state", "from_number", "to_number",
    "queue", "agent", "outcome", "end_cause", "created_at", "queued_at", "ringing_at",
    "answered_at", "ended_at", "ring_s", "talk_s", "hold_s", "wait_s", "recording",
    "recording_state", "transferred_to", "agents_rung", "events", "last_event_at",
)

# list_calls filters: name -> what it matches
FILTERS = (
    "tenant", "agent", "agents", "queue", "state", "outcome", "direction", "contact_id",
    "account_id", "number", "since", "until", "ended", "call_ids",
)

# advisory lock keys: (namespace, hashtext(call_id)); the namespace keeps clear of other users
_LOCK_NAMESPACE = 0x4354  # "CT"
_LOCK_CALLS = text(
    "SELECT count(pg_advisory_xact_lock(:ns, k)) FROM "
    "(SELECT DISTINCT hashtext(c) AS k FROM unnest(CAST(:ids AS text[])) AS c ORDER BY k) AS keys"
)

# built once: constructing a select with .in_() per batch cost more loop time than running it
_COUNT_EVENTS = (
    select(call_events.c.call_id, func.count())
    .where(call_events.c.call_id.in_(bindparam("ids", expanding=True)))
    .group_by(call_events.c.call_id)
)
_LOAD_EVENTS = select(call_events.c.call_id, call_events.c.payload).where(
    call_events.c.call_id.in_(bindparam("ids", expanding=True))
)
_EVENT_ROWS_PER_STMT = 1000  # rows per executemany; SQLAlchemy pages them under the parameter limits
_CALL_ROWS_PER_STMT = 1000


# A pop reaches the agent's browser straight from the event, before the store writer
# (lingering a few ms, longer under load) has written the call's row. An agent quick to
# answer, pick or create the contact must not get "call not found" for a call ringing on
# their screen: callers that know the row is coming wait for it this long.
CALL_ROW_WAIT_S = 5.0
CALL_ROW_POLL_S = 0.05

T = TypeVar("T")


async def wait_for_row(
    fetch: Callable[[], Awaitable[T | None]], timeout_s: float = CALL_ROW_WAIT_S, poll_s: float = CALL_ROW_POLL_S
) -> T | None:
    """`fetch()` until it finds something or `timeout_s` passes (then None)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    # polled: the writer may be another process (`cti worker --store`), so no event to wait on
    while (row := await fetch()) is None and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(poll_s)
    return row


def _utc(v: datetime | None) -> datetime | None:
    if v is None or v.tzinfo is UTC:
        return v
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)


def event_payload(e: CallEvent) -> dict[str, Any]:
    """`CallEvent.to_dict()` without dataclasses.asdict's deep copy (10x faster; same result)."""
    return {
        "event_id": e.event_id,
        "provider": e.provider,
        "provider_call_id": e.provider_call_id,
        "call_id": e.call_id,
        "kind": str(e.kind),
        "occurred_at": e.occurred_at.isoformat(),
        "seq": e.seq,
        "tenant": e.tenant,
        "agent": e.agent,
        "queue": e.queue,
        "direction": str(e.direction) if e.direction else None,
        "from_number": e.from_number,
        "to_number": e.to_number,
        "data": e.data,
    }


def event_row(e: CallEvent) -> dict[str, Any]:
    return {
        "event_id": e.event_id,
        "call_id": e.call_id,
        "tenant": e.tenant,
        "provider": e.provider,
        "kind": str(e.kind),
        "occurred_at": _utc(e.occurred_at),
        "seq": e.seq,
        "payload": event_payload(e),
    }


def call_row(c: Call) -> dict[str, Any]:
    row: dict[str, Any] = {"call_id": c.call_id}
    for name in FOLD_COLUMNS:
        v = getattr(c, name)
        if isinstance(v, datetime):
            v = _utc(v)
        elif isinstance(v, tuple):
            v = list(v)
        elif v is not None and name in ("direction", "state", "outcome", "end_cause"):
            v = str(v)
        row[name] = v
    return row


def row_to_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """A `calls` row as a plain dict: UTC-aware datetimes, agents_rung as a list."""
    out = dict(row)
    for k, v in out.items():
        if isinstance(v, datetime):
            out[k] = _utc(v)
    out["agents_rung"] = list(out.get("agents_rung") or [])
    return out


def call_from_row(row: Mapping[str, Any]) -> Call:
    """The fold-derived part of a `calls` row as a `Call`."""
    return Call.from_dict(row_to_dict(row))


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterable[list[dict[str, Any]]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


class CallRepo:
    """Reads and writes `calls` and `call_events`. Pass `conn` to join a caller's transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db
        insert = functools.partial(dialect_insert, db.dialect)
        ins = insert(call_events).on_conflict_do_nothing(index_elements=["event_id"])
        up = insert(calls)
        upsert = up.on_conflict_do_update(
            index_elements=["call_id"],
            set_={name: up.excluded[name] for name in FOLD_COLUMNS},
            # never replace a row with the fold of fewer events (a stale writer)
            where=calls.c.events <= up.excluded.events,
        )
        # One round trip per chunk of rows, by the cheapest way each driver has:
        # - PostgreSQL: RETURNING makes SQLAlchemy send each chunk as ONE multi-row INSERT
        #   ("insertmanyvalues", compiled once and cached) instead of one statement per row;
        # - SQLite: no RETURNING, so the rows go to sqlite3's executemany, which loops in C on
        #   the driver's thread. Rendering a multi-row INSERT on the event loop cost 0.3 ms a
        #   batch there, a step every pop that arrived meanwhile waited for.
        self._returning = db.dialect == "postgresql"
        if self._returning:
            ins = ins.returning(call_events.c.event_id)
            upsert = upsert.returning(calls.c.call_id)
        self._insert_events = ins
        self._upsert_calls = upsert

    @asynccontextmanager
    async def _conn(self, conn: AsyncConnection | None, *, write: bool):
        if conn is not None:
            yield conn
            return
        if write:
            async with self.db.engine.begin() as c:
                yield c
        else:
            async with self.db.engine.connect() as c:
                yield c

    async def insert_events(self, events: Sequence[CallEvent], *, conn: AsyncConnection | None = None) -> None:
        """Store events; ones already stored (same event_id) are skipped."""
        unique = {e.event_id: e for e in events}
        if not unique:
            return
        rows = [event_row(e) for e in unique.values()]
        async with self._conn(conn, write=True) as c:
            for part in _chunks(rows, _EVENT_ROWS_PER_STMT):
                result = await c.execute(self._insert_events, part)
                if self._returning:
                    result.all()

    async def load_events(
        self, call_ids: Iterable[str], *, conn: AsyncConnection | None = None
    ) -> dict[str, list[CallEvent]]:
        """Stored events of these calls (every id is a key, possibly with an empty list)."""
        ids = list(dict.fromkeys(call_ids))
        out: dict[str, list[CallEvent]] = {cid: [] for cid in ids}
        if not ids:
            return out
        async with self._conn(conn, write=False) as c:
            for i in range(0, len(ids), 500):
                for cid, payload in (await c.execute(_LOAD_EVENTS, {"ids": ids[i : i + 500]})).all():
                    out[cid].append(CallEvent.from_dict(payload))
        return out

    async def count_events(
        self, call_ids: Iterable[str], *, conn: AsyncConnection | None = None
    ) -> dict[str, int]:
        """Stored events per call (calls without any are absent)."""
        ids = list(dict.fromkeys(call_ids))
        out: dict[str, int] = {}
        async with self._conn(conn, write=False) as c:
            for i in range(0, len(ids), 500):
                rows = (await c.execute(_COUNT_EVENTS, {"ids": ids[i : i + 500]})).all()
                out.update({cid: int(n) for cid, n in rows})
        return out

    async def lock_calls(self, call_ids: Iterable[str], *, conn: AsyncConnection) -> None:
        """Hold a per-call lock until `conn`'s transaction ends (PostgreSQL advisory locks).

        Taken in one fixed order (by key) so two writers cannot deadlock. SQLite needs
        none: a write transaction there already excludes every other writer.
        """
        if self.db.dialect != "postgresql":
            return
        ids = list(dict.fromkeys(call_ids))
        if ids:
            await conn.execute(_LOCK_CALLS, {"ns": _LOCK_NAMESPACE, "ids": ids})

    async def events_for(self, call_id: str) -> list[CallEvent]:
        return (await self.load_events([call_id]))[call_id]

    async def upsert_calls(self, records: Sequence[Call], *, conn: AsyncConnection | None = None) -> None:
        """Insert or update call rows from fold results (fold columns only)."""
        latest: dict[str, Call] = {}
        for c in records:  # one row per call per statement (PostgreSQL requires it)
            prev = latest.get(c.call_id)
            if prev is None or c.events >= prev.events:
                latest[c.call_id] = c
        if not latest:
            return
        rows = [call_row(c) for c in latest.values()]
        async with self._conn(conn, write=True) as cx:
            for part in _chunks(rows, _CALL_ROWS_PER_STMT):
                result = await cx.execute(self._upsert_calls, part)
                if self._returning:
                    result.all()

    async def get_call(self, call_id: str, *, tenant: str | None = None) -> dict[str, Any] | None:
        """The full `calls` row (fold columns and the other stages' columns), or None."""
        q = select(calls).where(calls.c.call_id == call_id)
        if tenant is not None:
            q = q.where(calls.c.tenant == tenant)
        async with self._conn(None, write=False) as c:
            row = (await c.execute(q)).mappings().first()
        return row_to_dict(row) if row is not None else None

    async def list_calls(
        self, filters: Mapping[str, Any] | None = None, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Calls matching `filters` (see FILTERS), newest first."""
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must be >= 0")
        q = _filtered(select(calls), filters or {})
        q = q.order_by(calls.c.created_at.desc(), calls.c.call_id).limit(limit).offset(offset)
        async with self._conn(None, write=False) as c:
            return [row_to_dict(r) for r in (await c.execute(q)).mappings().all()]

    async def count_calls(self, filters: Mapping[str, Any] | None = None) -> int:
        q = _filtered(select(func.count()).select_from(calls), filters or {})
        async with self._conn(None, write=False) as c:
            return int((await c.execute(q)).scalar_one())


def _filtered(q: Select, filters: Mapping[str, Any]) -> Select:
    """Apply list filters; an unknown filter name is an error, not silently ignored."""
    for name, value in filters.items():
        if name not in FILTERS:
            raise ValueError(f"unknown call filter {name!r} (known: {', '.join(FILTERS)})")
        if value is None:
            continue
        if name == "agents" or name == "call_ids":
            col = calls.c.agent if name == "agents" else calls.c.call_id
            q = q.where(col.in_(list(value)))
        elif name == "number":
            q = q.where(or_(calls.c.from_number == value, calls.c.to_number == value))
        elif name == "since":
            q = q.where(calls.c.created_at >= _utc(value))
        elif name == "until":
            q = q.where(calls.c.created_at < _utc(value))
        elif name == "ended":
            q = q.where(calls.c.state == "ended") if value else q.where(calls.c.state != "ended")
        else:
            q = q.where(calls.c[name] == str(value))
    return q
