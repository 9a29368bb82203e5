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


async def _plan(store_url: str, stmt: Any, params: dict[str, Any] | None = None) -> str:
    """The database's plan for `stmt`: values bound into the SQL, or sent as `params` (writes)."""
    await migrate.upgrade_async(store_url)
    db = Database(store_url)
    await db.connect()
    try:
        async with db.engine.connect() as conn:
            explain = "EXPLAIN " if db.dialect == "postgresql" else "EXPLAIN QUERY PLAN "
            if db.dialect == "postgresql":
                await conn.execute(sa.text("SET enable_seqscan = off"))
            if params is None:
                sql = str(stmt.compile(dialect=conn.dialect,
                                       compile_kwargs={"literal_binds": True, "render_postcompile": True}))
                rows = (await conn.execute(sa.text(explain + sql))).all()
            else:
                compiled = stmt.compile(dialect=conn.dialect)
                values = compiled.construct_params(params)
                args = tuple(values[k] for k in compiled.positiontup or ())
                rows = (await conn.exec_driver_sql(explain + str(compiled), args)).all()
            return "\n".join(str(r[0] if db.dialect == "postgresql" else r[-1]) for r in rows)
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


async def test_closing_an_agents_open_spell_reads_only_open_spells(store_url: str) -> None:
    from datetime import UTC, datetime

    from cti.app import CLOSE_OPEN_SPELLS

    plan = await _plan(store_url, CLOSE_OPEN_SPELLS,
                       {"b_agent": "alice", "b_at": datetime(2026, 3, 2, 9, 0, tzinfo=UTC)})
    assert "ix_agent_state_log_open" in plan, plan


async def test_a_socket_snapshot_reads_only_the_agents_calls_in_progress(store_url: str) -> None:
    from cti.store import tables as t

    stmt = sa.select(t.calls).where(t.calls.c.tenant == "default", t.CALL_OPEN, t.calls.c.agent == "alice")
    plan = await _plan(store_url, stmt)
    assert "ix_calls_open_agent" in plan, plan


async def test_copying_the_contact_to_ended_calls_goes_by_primary_key(store_url: str) -> None:
    """Where nearly every call has a contact, `contact_id IS NULL` looked rarer to PostgreSQL
    than a primary-key match, and the copy walked ix_calls_contact_id instead."""
    from datetime import UTC, datetime

    from cti.app import call_contact_from_activity
    from cti.store import tables as t

    await migrate.upgrade_async(store_url)
    db = Database(store_url)
    await db.connect()
    at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(t.calls.insert(), [
                {"call_id": f"k{i}", "tenant": "default", "provider": "sim", "provider_call_id": f"k{i}",
                 "direction": "inbound", "state": "ended", "contact_id": f"c{i % 50}", "created_at": at}
                for i in range(2000)
            ])
            await conn.execute(sa.text("ANALYZE"))
    finally:
        await db.close()
    plan = await _plan(store_url, call_contact_from_activity(["k1", "k2"]))
    if "postgresql" in store_url:
        assert "pk_calls" in plan and "ix_calls_contact_id" not in plan, plan
    else:
        assert "SCAN calls" not in plan, plan
