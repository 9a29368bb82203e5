"""Shared fixtures: real redis-server and PostgreSQL, started once per session."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.servers import PostgresServer, RedisServer, postgres_server, redis_server

_db_counter = itertools.count()


@pytest.fixture(scope="session")
def redis_srv() -> Iterator[RedisServer]:
    with redis_server() as srv:
        yield srv


@pytest.fixture
def redis_url(redis_srv: RedisServer) -> str:
    """A clean Redis (FLUSHALL before each test)."""
    import redis

    r = redis.Redis.from_url(redis_srv.url)
    r.flushall()
    r.close()
    return redis_srv.url


@pytest.fixture(scope="session")
def pg_srv() -> Iterator[PostgresServer]:
    with postgres_server() as srv:
        yield srv


@pytest.fixture
def pg_url(pg_srv: PostgresServer) -> str:
    """A fresh, empty PostgreSQL database for this test (asyncpg URL)."""
    return pg_srv.create_database(f"t{next(_db_counter)}")


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/cti.db"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request) -> str:
    """Run a store test against both SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


async def make_engine(url: str) -> AsyncEngine:
    """An engine on `url` with every table created (without Alembic: quick, for unit-ish tests)."""
    from cti.store.tables import metadata

    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    return engine


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[AsyncEngine]:
    """A fresh store with our tables, on SQLite and on PostgreSQL."""
    eng = await make_engine(store_url)
    yield eng
    await eng.dispose()


@pytest.fixture
async def sqlite_engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    """SQLite only, for tests about logic rather than the database."""
    eng = await make_engine(sqlite_url)
    yield eng
    await eng.dispose()
