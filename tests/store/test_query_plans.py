"""The queries that run all day reach their rows through indexes, on SQLite and PostgreSQL.

A full scan of the activity history would cost more with every call ever taken: these check
the query plans, not timings (a test table is tiny; PostgreSQL is told to avoid scans so
that it shows the plan it would use on a big one).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from cti.store import migrate
from cti.store.db import Database


async def _plan(store_url: str, stmt: Any) -> str:
    await migrate.upgrade_async(store_url)
    db = Database(store_url)
    await db.connect()
    try:
        async with db.engine.connect() as conn:
            sql = str(stmt.compile(dialect=conn.dialect,
                                   compile_kwargs={"literal_binds": True, "render_postcompile": True}))
            if db.dialect == "postgresql":
                await conn.execute(sa.text("SET enable_seqscan = off"))
                return "\n".join(r[0] for r in (await conn.execute(sa.text("EXPLAIN " + sql))).all())
            return "\n".join(str(r[-1]) for r in (await conn.execute(sa.text("EXPLAIN QUERY PLAN " + sql))).all())
    finally:
        await db.close()


async def test_the_screen_pops_last_calls_find_a_number_through_indexes(store_url: str) -> None:
    from cti.crm.store import _HISTORY

    stmt = _HISTORY[False].params(tenant="default", numbers=["+33612345678"], contact_ids=["c-1"], limit=6)
    plan = await _plan(store_url, stmt)
    assert "ix_activities_from_number" in plan and "ix_activities_to_number" in plan, plan
    assert "SCAN activities" not in plan, plan  # SQLite's words for a full scan


async def test_the_crm_retry_loop_reads_only_what_is_pending(store_url: str) -> None:
    from cti.calls.activity import pending_query

    plan = await _plan(store_url, pending_query("default", max_refusals=5))
    assert "ix_activities_crm_pending" in plan, plan
