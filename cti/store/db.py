"""The database handle: one SQLAlchemy async engine per process.

SQLite (aiosqlite) is the embedded default: WAL journal so readers never block
the writer, and a busy timeout so two writers wait instead of failing.
PostgreSQL (asyncpg) is the multi-node store; at start-up `connect()` retries
with backoff while it is unreachable (containers start in any order) and logs
`db_unreachable` for each failed attempt.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import structlog
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

log = structlog.get_logger(__name__)

DEFAULT_URL = "sqlite+aiosqlite:///cti.db"
PING_IF_IDLE_S = 1.0  # see _ping_idle_connections


def dialect_insert(dialect: str, table: Any) -> Any:
    """`INSERT` with `ON CONFLICT` support for the two supported stores (SQLite, PostgreSQL)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise RuntimeError(f"unsupported database dialect {dialect}")
    return insert(table)


def is_transient(exc: BaseException) -> bool:
    """Errors that mean 'the store is not reachable right now', not 'this batch is bad'."""
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError))
    return isinstance(exc, (OSError, ConnectionError, TimeoutError))


def autocommit_reads(engine: Any) -> Any:
    """The engine for single-statement reads on the hot path (screen pop history, CRM lookups).

    On PostgreSQL a plain `engine.connect()` read costs a BEGIN and a ROLLBACK round trip
    around its one statement; AUTOCOMMIT skips both. SQLite keeps the plain engine: its
    in-memory databases share one connection, where switching modes would commit a writer's
    open transaction.
    """
    if engine is None or engine.dialect.name != "postgresql":
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def _ping_idle_connections(engine: AsyncEngine, idle_s: float) -> None:
    """Ping a pooled connection before use only if it sat idle for `idle_s`.

    `pool_pre_ping` pings on every checkout: a busy node checks out hundreds of connections a
    second, about 2.5 extra round trips per call. A connection used a moment ago is alive
    (or its failure shows at once, and the store writers retry it); one that idled may have
    been cut by a database restart or a firewall, so it is pinged and, if dead, replaced.
    """
    sync = engine.sync_engine

    @event.listens_for(sync, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(sync, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < idle_s:
            return  # just connected, or just used
        try:
            sync.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            # the pool drops this connection and checks out another
            raise sa_exc.DisconnectionError(f"pooled connection failed its ping: {exc!r}") from exc


def normalize_url(url: str) -> str:
    """Map the sync driver names people write to the async drivers we use."""
    if url.startswith("sqlite:///") or url == "sqlite://":
        return "sqlite+aiosqlite" + url[len("sqlite") :]
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("postgresql+psycopg2://"):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    return make_url(url).render_as_string(hide_password=True)


class Database:
    """`await db.connect()`, then use `db.engine` (SQLAlchemy AsyncEngine)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        connect_timeout_s: float = 60.0,
        pool_size: int = 10,
        busy_timeout_ms: int = 10_000,
        echo: bool = False,
    ) -> None:
        self.url = normalize_url(url)
        # read on every store write (e.g. "does this dialect need locks?"): parsing the URL
        # each time was 3% of the event pipeline's loop time
        self._dialect = make_url(self.url).get_backend_name()
        self.connect_timeout_s = connect_timeout_s
        self.pool_size = pool_size
        self.busy_timeout_ms = busy_timeout_ms
        self.echo = echo
        self._engine: AsyncEngine | None = None

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self._dialect

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("Database.connect() was not awaited")
        return self._engine

    def _create_engine(self) -> AsyncEngine:
        u = make_url(self.url)
        kwargs: dict[str, Any] = {"echo": self.echo}
        if self.dialect == "sqlite":
            memory = u.database in (None, "", ":memory:")
            if memory:
                # one shared connection, or every checkout would see a new empty database
                kwargs["poolclass"] = StaticPool
                kwargs["connect_args"] = {"check_same_thread": False}
            engine = create_async_engine(self.url, **kwargs)
            busy = self.busy_timeout_ms

            @event.listens_for(engine.sync_engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                if not memory:
                    cur.execute("PRAGMA journal_mode=WAL")
                cur.execute(f"PRAGMA busy_timeout={int(busy)}")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

            return engine
        if self.dialect == "postgresql":
            kwargs.update(pool_size=self.pool_size, max_overflow=self.pool_size)
            engine = create_async_engine(self.url, **kwargs)
            _ping_idle_connections(engine, PING_IF_IDLE_S)
            return engine
        return create_async_engine(self.url, **kwargs)

    async def connect(self) -> None:
        """Create the engine and check it answers; retries while PostgreSQL is unreachable."""
        if self._engine is not None:
            return
        engine = self._create_engine()
        deadline = time.monotonic() + self.connect_timeout_s
        attempt = 0
        while True:
            try:
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                break
            except asyncio.CancelledError:
                await engine.dispose()
                raise
            except Exception as exc:
                attempt += 1
                delay = random.uniform(0.05, min(5.0, 0.1 * 2**attempt))
                if self.dialect == "sqlite" or time.monotonic() + delay > deadline:
                    await engine.dispose()
                    log.error("db_connect_failed", url=redact(self.url), attempts=attempt, error=repr(exc))
                    raise
                log.warning(
                    "db_unreachable", url=redact(self.url), attempt=attempt,
                    retry_in_s=round(delay, 2), error=repr(exc),
                )
                await asyncio.sleep(delay)
        self._engine = engine
        log.info("db_connected", url=redact(self.url), dialect=self.dialect)

    async def ping(self) -> bool:
        if self._engine is None:
            return False
        try:
            async with self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except asyncio.CancelledError:
            raise
        except Exception:  # unreachable is an answer, not an error
            return False

    async def close(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()
