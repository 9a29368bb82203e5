"""Alembic migrations build exactly the schema of cti/store/tables.py, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from cti.store import migrate
from cti.store.db import Database
from cti.store.tables import metadata


async def _diff_and_revision(url: str) -> tuple[list, str | None, set[str]]:
    db = Database(url)
    await db.connect()
    try:
        async with db.engine.connect() as conn:

            def check(sync_conn):
                ctx = MigrationContext.configure(sync_conn, opts={"compare_type": True})
                return (
                    compare_metadata(ctx, metadata),
                    ctx.get_current_revision(),
                    set(inspect(sync_conn).get_table_names()),
                )

            return await conn.run_sync(check)
    finally:
        await db.close()


async def test_upgrade_head_builds_the_schema_of_tables_py(store_url: str) -> None:
    await migrate.upgrade_async(store_url)
    diff, rev, tables = await _diff_and_revision(store_url)
    assert diff == []
    assert rev is not None
    assert set(metadata.tables) <= tables


async def test_upgrade_is_idempotent_and_keeps_data(store_url: str) -> None:
    await migrate.upgrade_async(store_url)
    db = Database(store_url)
    await db.connect()
    async with db.engine.begin() as conn:
        await conn.execute(text("INSERT INTO queues (name, tenant, config) VALUES ('sales', 'default', '{}')"))
    migrate.upgrade(store_url)  # sync form, called while a loop runs: done in a helper thread
    async with db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM queues"))).scalar() == 1
    await db.close()


def test_sync_upgrade_and_downgrade_to_base(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    migrate.downgrade(sqlite_url, "base")
    migrate.upgrade(sqlite_url)


async def test_postgres_upgrade_then_downgrade_leaves_no_table(pg_url: str) -> None:
    await migrate.upgrade_async(pg_url)
    await migrate.asyncio.to_thread(migrate.downgrade, pg_url, "base")
    _, _, tables = await _diff_and_revision(pg_url)
    assert tables <= {"alembic_version"}


async def test_upgrade_dates_existing_activities_with_their_calls_start(store_url: str) -> None:
    """Activities waiting for the CRM when 0004 is applied are pushed with the call's time."""
    from datetime import UTC, datetime

    from cti.store.tables import activities, calls

    start, recorded = datetime(2026, 3, 2, 9, 0, tzinfo=UTC), datetime(2026, 3, 2, 9, 5, tzinfo=UTC)
    await migrate.upgrade_async(store_url, "0003")
    db = Database(store_url)
    await db.connect()
    try:
        async with db.engine.begin() as conn:
            await conn.execute(calls.insert().values(call_id="c1", tenant="default", provider="sim",
                                                     provider_call_id="c1", direction="inbound", state="ended",
                                                     created_at=start))
            for cid in ("c1", "gone"):  # "gone": its call was purged
                await conn.execute(activities.insert().values(call_id=cid, tenant="default", subject="Inbound",
                                                              direction="inbound", created_at=recorded,
                                                              updated_at=recorded))
        await migrate.upgrade_async(store_url)
        async with db.engine.connect() as conn:
            got = dict((await conn.execute(text("SELECT call_id, started_at FROM activities"))).all())
    finally:
        await db.close()
    assert got["gone"] is None
    at = got["c1"] if isinstance(got["c1"], datetime) else datetime.fromisoformat(got["c1"])
    assert (at if at.tzinfo else at.replace(tzinfo=UTC)) == start
