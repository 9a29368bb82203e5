"""An in-process app (demo world, simulator, SQLite, memory bus) and an HTTP client for it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer


@dataclass
class AppClient:
    app: Any
    client: TestClient

    async def call(self, method: str, path: str, token: str | None = None, body: Any = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        resp = await self.client.request(method, path, json=body, headers=h)
        ctype = resp.headers.get("Content-Type", "")
        data = await (resp.json() if "json" in ctype else resp.text())
        return resp.status, data, resp.headers

    @property
    def sim(self) -> Any:
        return self.app.adapters["sim"]


async def start_app(settings: Any, node_id: str = "it") -> Any:
    """Migrate, seed the demo directory, start the app."""
    from cti.app import CtiApp
    from cti.demo.run import seed_directory
    from cti.store.migrate import upgrade_async

    await upgrade_async(settings.store.url)
    await seed_directory(settings)
    app = CtiApp(settings, node_id=node_id)
    await app.start()
    return app


async def make_app(tmp: Path, **sim_overrides: Any) -> Any:
    from tests.e2e.conftest import build_live_settings

    return await start_app(build_live_settings(tmp, 8080, **sim_overrides))


@contextlib.asynccontextmanager
async def app_client(settings: Any, node_id: str = "it") -> AsyncIterator[AppClient]:
    """A started app with its agents signed in, and an HTTP client on it; both stopped after."""
    from cti.demo.run import agents_log_in

    app = await start_app(settings, node_id)
    await agents_log_in(app)
    client = TestClient(TestServer(app.web_app))
    await client.start_server()
    try:
        yield AppClient(app, client)
    finally:
        await client.close()
        await app.stop()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[AppClient]:
    from tests.e2e.conftest import build_live_settings

    async with app_client(build_live_settings(tmp_path, 8080)) as client:
        yield client
