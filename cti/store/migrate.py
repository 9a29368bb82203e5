"""Schema migrations (Alembic), run programmatically.

`upgrade(url)` is synchronous: it runs `alembic upgrade head` against an async
URL (sqlite+aiosqlite or postgresql+asyncpg). Alembic's env.py drives the async
engine with its own event loop, so when called from a thread that already runs
an event loop it does the work in a helper thread and blocks until it is done.
From async code prefer `await upgrade_async(url)`, which does not block the loop.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config

from cti.store.db import normalize_url, redact

log = structlog.get_logger(__name__)

HERE = Path(__file__).resolve().parent


def alembic_config(url: str) -> Config:
    cfg = Config(str(HERE / "alembic.ini"))
    cfg.set_main_option("script_location", str(HERE / "migrations"))
    # ConfigParser interpolation: a literal % in a password must be doubled
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def _upgrade(url: str, revision: str) -> None:
    command.upgrade(alembic_config(url), revision)


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` (default: the newest). Idempotent."""
    log.info("db_migrate", url=redact(normalize_url(url)), revision=revision)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _upgrade(url, revision)
        return
    errors: list[BaseException] = []

    def run() -> None:
        try:
            _upgrade(url, revision)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    t = threading.Thread(target=run, name="cti-migrate")
    t.start()
    t.join()
    if errors:
        raise errors[0]


async def upgrade_async(url: str, revision: str = "head") -> None:
    """`upgrade` without blocking the running event loop."""
    log.info("db_migrate", url=redact(normalize_url(url)), revision=revision)
    await asyncio.to_thread(_upgrade, url, revision)


def head_revision() -> str | None:
    """The newest schema revision this version of cti knows (from the migration scripts)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://")).get_current_head()


async def schema_problem(url: str) -> str | None:
    """Why the database at `url` cannot serve this version (no schema, an older or newer one),
    or None. A database that cannot be reached is not judged here: the store's own retries
    and /readyz deal with an outage."""
    import sqlalchemy as sa

    from cti.store.db import Database

    db = Database(url)
    try:
        await db.connect()
        async with db.engine.connect() as conn:
            if not await conn.run_sync(lambda c: sa.inspect(c).has_table("alembic_version")):
                current = None
            else:
                current = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar()
    except (OSError, sa.exc.DBAPIError, TimeoutError):
        return None
    finally:
        await db.close()
    head = head_revision()
    if current == head:
        return None
    where = redact(normalize_url(url))
    if current is None:
        return f"the database {where} has no cti schema yet: run `cti migrate` with this config first"
    return (f"the database {where} is at schema revision {current}, this version needs {head}: "
            "run `cti migrate` with this config first")


def downgrade(url: str, revision: str) -> None:
    """Step the schema back (tests and emergencies; data in dropped tables is lost)."""
    command.downgrade(alembic_config(url), revision)
