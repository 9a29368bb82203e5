"""An in-process app (demo world, SQLite, memory bus) with settings a test chooses."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import AppClient
from tests.integration.conftest import app_client as integration_app_client
from tests.transcribe.conftest import recognizer  # noqa: F401  (the real tiny.en model, session-wide)


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def live_settings(tmp: Path, update: dict[str, Any] | None = None) -> Any:
    from cti.config import Settings
    from tests.e2e.conftest import build_live_settings

    d = build_live_settings(tmp, 8080).model_dump()
    return Settings.model_validate(merge(d, update or {}))


def app_client(settings: Any) -> contextlib.AbstractAsyncContextManager[AppClient]:
    """The integration tests' app and client, under this suite's node name."""
    return integration_app_client(settings, node_id="sec")


@pytest.fixture
def cli_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Let a test call `cti.cli.configure_logging` without leaking into later tests.

    It caches loggers on first use, bound to this test's (captured, soon closed) stderr; here
    the cache is off and the previous configuration comes back afterwards.
    """
    import structlog

    import cti.cli

    real = cti.cli.configure_logging
    old = structlog.get_config()

    def configure(level: str = "info") -> None:
        real(level)
        structlog.configure(cache_logger_on_first_use=False)

    monkeypatch.setattr(cti.cli, "configure_logging", configure)
    try:
        yield
    finally:
        structlog.reset_defaults()
        structlog.configure(**old)
