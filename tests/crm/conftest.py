"""CRM fixtures: a store with our tables (SQLite and PostgreSQL) and the sample directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cti.store.tables import metadata

DATA = Path(__file__).parent / "data"


async def make_engine(url: str) -> AsyncEngine:
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
async def lite_engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    """SQLite only, for tests about logic rather than the database."""
    eng = await make_engine(sqlite_url)
    yield eng
    await eng.dispose()
