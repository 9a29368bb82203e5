from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.stats.aggregate import StatsRollup
from tests.conftest import make_engine  # noqa: F401  (re-exported for tests importing it here)
from tests.stats import history


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
