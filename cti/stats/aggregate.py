"""Rollups maintained as calls end: stats_hourly per hour x queue x agent x direction.

Idempotent: a call's id is inserted into stats_applied in the same transaction as
its increments; a call already there adds nothing (same call applied twice, on one
node or two, counts once). Only ended calls are applied.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cti.config import Settings
from cti.model import Call
from cti.stats.metrics import (
    COUNT_FIELDS,
    MAX_FIELDS,
    SUM_FIELDS,
    add_sums,
    call_deltas,
    call_start,
    empty_sums,
    hour_of,
    row_of,
)
from cti.store.db import dialect_insert
from cti.store.tables import calls as calls_t
from cti.store.tables import stats_applied, stats_hourly
from cti.yielding import in_steps, step_aside

log = structlog.get_logger(__name__)

_KEY = ("tenant", "hour", "queue", "agent", "direction")


def thresholds(settings: Settings, queue: str | None) -> tuple[float, float]:
    """(service_level_s, short_abandon_s) for a queue: the queue's own, else [stats]."""
    for q in settings.queues:
        if q.name == queue:
            return q.service_level_s, q.short_abandon_s
    return settings.stats.service_level_s, settings.stats.short_abandon_s


def _insert(engine_or_conn: AsyncEngine | AsyncConnection, table: sa.Table) -> Any:
    return dialect_insert(engine_or_conn.dialect.name, table)


# Both built once per dialect: a statement built per batch is garbage in reference cycles
# (`.excluded` aliases the whole table) that the collector frees while the loop waits.
@functools.cache
def _applied_insert(dialect: str) -> Any:
    return dialect_insert(dialect, stats_applied).on_conflict_do_nothing(
        index_elements=["call_id"]
    ).returning(stats_applied.c.call_id)


@functools.cache
def _hourly_upsert(dialect: str) -> Any:
    greatest = sa.func.greatest if dialect == "postgresql" else sa.func.max
    stmt = dialect_insert(dialect, stats_hourly)
    ex = stmt.excluded
    set_: dict[str, Any] = {f: stats_hourly.c[f] + ex[f] for f in COUNT_FIELDS + SUM_FIELDS}
    for f in MAX_FIELDS:
        set_[f] = greatest(stats_hourly.c[f], ex[f])
    return stmt.on_conflict_do_update(index_elements=list(_KEY), set_=set_)


def _chunks(items: list[Any], n: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


class StatsRollup:
    """Maintains stats_hourly from ended calls. `await on_call(call)` for each call update."""

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings

    async def on_call(self, call: Call | Mapping[str, Any]) -> bool:
        """Apply an ended call once. Returns True when it was counted now, False otherwise."""
        row = row_of(call)
        if row.get("state") != "ended":
            return False
        return await self.apply_batch([row]) == 1

    async def apply_batch(self, calls: Iterable[Call | Mapping[str, Any]]) -> int:
        """Apply many ended calls in one transaction; returns how many were new."""
        rows = [r for r in (row_of(c) for c in calls) if r.get("state") == "ended" and call_start(r)]
        if not rows:
            return 0
        applied = 0
        async with self.engine.begin() as conn:
            for chunk in _chunks(rows, 5000):
                applied += await self._apply_chunk(conn, chunk)
        return applied

    async def _apply_chunk(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> int:
        # sorted: concurrent batches take their row locks in the same order (no deadlocks)
        by_id = {r["call_id"]: r for r in sorted(rows, key=lambda r: r["call_id"])}
        # executemany of one fixed statement (not .values(rows)): SQLAlchemy compiles it once and
        # caches it, where a VALUES list of each batch's length was compiled again every time
        ins = _applied_insert(conn.dialect.name)
        params = [{"call_id": cid, "hour": hour_of(call_start(r))} for cid, r in by_id.items()]  # type: ignore[arg-type]
        new_ids = [x[0] for x in (await conn.execute(ins, params)).all()]
        if not new_ids:
            return 0
        tenant_sums: dict[tuple, dict[str, float]] = {}
        async for cid in in_steps(new_ids):
            r = by_id[cid]
            sl, short = thresholds(self.settings, r.get("queue"))
            tenant = r.get("tenant") or self.settings.site.tenant
            for d in call_deltas(r, sl, short):
                add_sums(tenant_sums.setdefault((tenant, *d.key()), empty_sums()), d.values())
        await step_aside()  # the deltas and the upsert's parameters: two loop steps, not one
        await self._upsert(conn, tenant_sums)
        return len(new_ids)

    async def _upsert(self, conn: AsyncConnection, sums: dict[tuple, dict[str, float]]) -> None:
        values = [dict(zip(_KEY, k, strict=True), **v) for k, v in sorted(sums.items())]
        upsert = _hourly_upsert(conn.dialect.name)
        for chunk in _chunks(values, 1000):
            await conn.execute(upsert, chunk)  # executemany: compiled once (see _apply_chunk)

    async def rebuild(self, tenant: str | None = None, batch: int = 20_000) -> int:
        """Recompute every rollup from the calls table (after a threshold change, say)."""
        tenant = tenant or self.settings.site.tenant
        async with self.engine.begin() as conn:
            await conn.execute(sa.delete(stats_hourly).where(stats_hourly.c.tenant == tenant))
            ids = sa.select(calls_t.c.call_id).where(calls_t.c.tenant == tenant)
            await conn.execute(sa.delete(stats_applied).where(stats_applied.c.call_id.in_(ids)))
        total = 0
        last = ""
        while True:  # keyset pages: no reader stays open while we write (SQLite locks)
            async with self.engine.connect() as conn:
                page = (await conn.execute(
                    sa.select(calls_t)
                    .where(calls_t.c.tenant == tenant, calls_t.c.state == "ended", calls_t.c.call_id > last)
                    .order_by(calls_t.c.call_id).limit(batch)
                )).mappings().all()
            if not page:
                break
            last = page[-1]["call_id"]
            total += await self.apply_batch([dict(r) for r in page])
        log.info("stats_rollup_rebuilt", tenant=tenant, calls=total)
        return total
