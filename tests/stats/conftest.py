from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cti.stats.aggregate import StatsRollup
from cti.store.tables import metadata
from tests.stats import history


async def make_engine(url: str) -> AsyncEngine:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    return engine


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[AsyncEngine]:
    eng = await make_engine(store_url)
    yield eng
    await eng.dispose()


@pytest.fixture
async def sqlite_engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    eng = await make_engine(sqlite_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def settings():
    return history.settings()


async def _load_hand(engine: AsyncEngine, settings) -> AsyncEngine:
    rows = history.hand_calls()
    await history.insert_calls(engine, rows)
    await history.load_crm(engine)
    rollup = StatsRollup(engine, settings)
    for r in rows:
        await rollup.on_call(r)
    return engine


@pytest.fixture
async def hand_db(engine: AsyncEngine, settings) -> AsyncEngine:
    """The hand-computable history, loaded and rolled up (SQLite and PostgreSQL)."""
    return await _load_hand(engine, settings)


@pytest.fixture
async def hand_sqlite(sqlite_engine: AsyncEngine, settings) -> AsyncEngine:
    """The same history on SQLite only (API tests: the store is not what they check)."""
    return await _load_hand(sqlite_engine, settings)
