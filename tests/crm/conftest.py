"""CRM fixtures: a store with our tables (SQLite and PostgreSQL) and the sample directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

DATA = Path(__file__).parent / "data"


@pytest.fixture
async def lite_engine(sqlite_engine: AsyncEngine) -> AsyncEngine:
    """SQLite only, for tests about logic rather than the database."""
    return sqlite_engine
