"""A live app for browser and API end-to-end tests, plus Debian's Chromium via Playwright.

`live_app` runs the whole product (demo world: simulator PBX, SQLite, memory bus,
seeded CRM) in a background thread with its own event loop, on a free port.
Random arrivals are off and agents do not auto-answer, so tests decide what
happens: `live_app.inject_call(from_number, queue)` makes a customer call in,
`live_app.run(coro)` runs anything on the app's loop.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.servers import free_port, wait_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass
class LiveApp:
    base_url: str
    app: Any
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    tokens: dict[str, str] = field(default_factory=dict)

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call_soon(self, fn: Any, *args: Any) -> Any:
        fut: Future[Any] = Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args))
            except Exception as exc:  # surfaced in the test thread
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return fut.result(10)

    @property
    def simulator(self) -> Any:
        return self.app.adapters["sim"]

    def inject_call(self, from_number: str, queue: str = "support", patience_s: float = float("inf")) -> str:
        """A customer calls the queue; returns our call id."""
        from cti.model import make_call_id

        pcid = self.call_soon(lambda: self.simulator.inject_call(from_number=from_number, queue=queue,
                                                                  patience_s=patience_s))
        return make_call_id(self.app.settings.site.tenant, "sim", pcid)


def build_live_settings(tmp: Path, port: int, **sim_overrides: Any) -> Any:
    from cti.demo.run import demo_settings

    settings = demo_settings(str(tmp / "cti.db"), str(tmp / "recordings"), port, "127.0.0.1", False)
    d = settings.model_dump()
    sim = d["providers"][0]
    sim.update({"arrival_rate_per_min": 0, "outbound_per_agent_per_hour": 0, "auto_answer": False,
                "record": False})
    sim.update(sim_overrides)
    d["server"]["allowed_origins"] = [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
    from cti.config import Settings

    return Settings.model_validate(d)


def start_live_app(tmp: Path, **sim_overrides: Any) -> LiveApp:
    from aiohttp import web

    from cti.app import CtiApp
    from cti.demo.run import agents_log_in, seed_directory
    from cti.store.migrate import upgrade_async

    port = free_port()
    settings = build_live_settings(tmp, port, **sim_overrides)
    # everything async runs on the app's own loop: Playwright's sync API may own this thread's
    loop = asyncio.new_event_loop()
    started: Future[Any] = Future()
    stop_event: dict[str, Any] = {}

    async def main() -> None:
        await upgrade_async(settings.store.url)
        await seed_directory(settings)
        app = CtiApp(settings, node_id="e2e")
        await app.start()
        runner = web.AppRunner(app.web_app, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await agents_log_in(app)
        stop = asyncio.Event()
        stop_event["stop"] = stop
        started.set_result(app)
        await stop.wait()
        await app.stop()
        await runner.cleanup()

    def thread_main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(main())
        except Exception as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    th = threading.Thread(target=thread_main, daemon=True, name="live-app")
    th.start()
    app = started.result(60)
    wait_port(port)
    live = LiveApp(f"http://127.0.0.1:{port}", app, loop, th)
    live.tokens = {"admin": "demo-admin", "supervisor": "demo-supervisor"}
    live._stop = stop_event["stop"]  # type: ignore[attr-defined]
    return live


def stop_live_app(live: LiveApp) -> None:
    live.loop.call_soon_threadsafe(live._stop.set)  # type: ignore[attr-defined]
    live.thread.join(30)


@pytest.fixture
def live_app(tmp_path: Path) -> Iterator[LiveApp]:
    live = start_live_app(tmp_path)
    try:
        yield live
    finally:
        stop_live_app(live)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # module scope, not session: Playwright's sync API keeps an event loop running in this
    # thread while it is open, which would break every asyncio test collected after e2e/
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                               args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                     "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    # the browser in the site's time zone (the demo's, Europe/Paris), as its users' are: in UTC, the
    # dashboard's default dates ("the last 7 days") missed the calls of the hour when Paris is
    # already on the next day
    ctx = browser.new_context(viewport={"width": 1280, "height": 860}, timezone_id="Europe/Paris")
    p = ctx.new_page()
    yield p
    ctx.close()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
