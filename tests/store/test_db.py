"""The database handle: SQLite pragmas, PostgreSQL retry at start-up, ping."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from structlog.testing import capture_logs

from cti.store.db import Database, normalize_url
from tests.servers import free_port


def test_sync_driver_urls_map_to_async_drivers() -> None:
    assert normalize_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert normalize_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert normalize_url("postgresql+asyncpg://u@h/db") == "postgresql+asyncpg://u@h/db"


async def test_sqlite_uses_wal_and_a_busy_timeout(sqlite_url: str) -> None:
    db = Database(sqlite_url, busy_timeout_ms=4321)
    await db.connect()
    async with db.engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == 4321
    assert db.dialect == "sqlite"
    assert await db.ping() is True
    await db.close()
    assert await db.ping() is False
    with pytest.raises(RuntimeError, match="connect"):
        _ = db.engine


async def test_in_memory_sqlite_keeps_one_database() -> None:
    db = Database("sqlite+aiosqlite://")
    await db.connect()
    async with db.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (x INTEGER)"))
    async with db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar() == 0
    await db.close()


async def test_postgres_connects_and_pings(pg_url: str) -> None:
    db = Database(pg_url)
    await db.connect()
    assert db.dialect == "postgresql"
    assert await db.ping() is True
    await db.close()


async def test_unreachable_postgres_is_retried_with_a_clear_log_then_fails() -> None:
    url = f"postgresql+asyncpg://cti:secret@127.0.0.1:{free_port()}/cti"
    db = Database(url, connect_timeout_s=1.0)
    with capture_logs() as logs, pytest.raises(OSError):
        await db.connect()
    unreachable = [e for e in logs if e["event"] == "db_unreachable"]
    assert len(unreachable) >= 2
    assert "secret" not in str(logs)  # the password never reaches a log
    assert unreachable[0]["url"].startswith("postgresql+asyncpg://cti:***@127.0.0.1")



async def test_postgres_pings_a_pooled_connection_only_after_it_idled(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cti.store.db as dbmod

    monkeypatch.setattr(dbmod, "PING_IF_IDLE_S", 0.2)
    db = Database(pg_url)
    await db.connect()
    pings = 0
    real_ping = db.engine.sync_engine.dialect.do_ping

    def counting_ping(conn: object) -> object:
        nonlocal pings
        pings += 1
        return real_ping(conn)

    monkeypatch.setattr(db.engine.sync_engine.dialect, "do_ping", counting_ping)
    # back-to-back uses: no ping (pool_pre_ping paid a round trip on each)
    for _ in range(5):
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    assert pings == 0
    # a pooled connection cut while idle (a database restart, a firewall) is pinged, found dead
    # and replaced: the caller never sees it
    async with db.engine.connect() as held:  # a second pooled connection, killed below
        async with db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        await held.execute(text("SELECT 1"))
    async with db.engine.connect() as conn:
        await conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    import asyncio

    await asyncio.sleep(0.3)
    for _ in range(3):
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    assert pings >= 1
    await db.close()
