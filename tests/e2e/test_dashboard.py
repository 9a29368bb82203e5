"""The dashboard in Debian's Chromium: it loads, the charts draw the data, a live update arrives.

Runs against the lead's `live_app` (the whole demo) when the store layer it needs is
present, else against a small app serving the same routes and static files with a
hub of its own. Either way a week of generated history is loaded (and rolled up)
first, so the charts have the same data to draw.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import screenshot
from tests.servers import free_port, wait_port
from tests.stats import history

pytestmark = pytest.mark.browser


@dataclass
class Dash:
    base_url: str
    token: str
    push_live: Callable[[], None]   # make something happen that the live feed must show


async def seed_history(engine: Any, settings: Any, agents: list[str], queues: list[str | None]) -> int:
    """300 calls over the last 6 days; a third of them from CRM contacts, some escalated or unresolved."""
    import random

    import sqlalchemy as sa

    from cti.stats.aggregate import StatsRollup
    from cti.store import tables as t

    async with engine.connect() as conn:
        crm = (await conn.execute(sa.select(t.contacts.c.id, t.contacts.c.account_id).limit(12))).all()
    rnd = random.Random(5)
    start = datetime.now(UTC) - timedelta(days=6)
    rows = history.random_calls(300, seed=11, start=start, days=6, agents=agents, queues=queues, prefix="e2e")
    for r in rows:
        r["provider"] = "e2e-history"
        r["tenant"] = settings.site.tenant
        if crm and rnd.random() < 0.35:
            r["contact_id"], r["account_id"] = rnd.choice(crm)
            r["disposition"] = rnd.choice(["resolved", "resolved", "escalated", "follow_up"])
    await history.insert_calls(engine, rows)
    return await StatsRollup(engine, settings).apply_batch(rows)


def _lead_app_ready() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("cti.store.db", "cti.store.migrate"))


def _own_app(tmp: Path) -> tuple[Dash, Callable[[], None]]:
    """Routes + static files + a Hub on a free port, in a thread with its own loop."""
    from types import SimpleNamespace

    from aiohttp import web

    from cti.calls.control import RateLimiter
    from cti.clock import SystemClock
    from cti.metrics import Metrics
    from cti.model import Role
    from cti.services import Services
    from cti.stats.live import live_from_store, live_snapshot
    from cti.web.auth import Principal, TokenRecord, TokenStore, hash_token
    from cti.web.server import build_web_app
    from cti.web.ws import Hub
    from tests.stats.conftest import make_engine

    settings = history.settings()
    port = free_port()
    loop = asyncio.new_event_loop()
    started: Future[Any] = Future()
    state: dict[str, Any] = {}

    async def main() -> None:
        engine = await make_engine(f"sqlite+aiosqlite:///{tmp}/dash.db")
        await history.load_crm(engine)
        await seed_history(engine, settings, ["alice", "bob", "carol"], ["support", "sales", None])
        hub = Hub()
        admin = Principal("root", Role.ADMIN, token_hash=hash_token("demo-admin"))

        async def snapshot(p: Principal) -> dict[str, Any]:
            return {"type": "snapshot", "me": {"user": p.user, "role": p.role.value}, "calls": [],
                    "live": await live_from_store(engine, settings, datetime.now(UTC))}

        svc = Services(settings=settings, metrics=Metrics(), clock=SystemClock(), bus=None,
                       db=SimpleNamespace(engine=engine), tokens=TokenStore([TokenRecord(admin)]), hub=hub,
                       extra={"failed_auth_limit": RateLimiter(1000), "snapshot": snapshot,
                              "directory": SimpleNamespace(agents={}, tenant="default")})
        runner = web.AppRunner(build_web_app(svc), handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        stop = asyncio.Event()
        state.update(stop=stop, hub=hub)
        started.set_result(True)
        await stop.wait()
        await runner.cleanup()
        await engine.dispose()

    def push() -> None:
        now = datetime.now(UTC)
        waiting = history.call("live1", now - timedelta(seconds=42), queue="support", state="queued",
                               from_number="+33612345678")
        agents = [{"id": "alice", "name": "Alice Martin", "team": "A", "state": "on_call",
                   "since": (now - timedelta(seconds=90)).isoformat(), "calls": []}]
        msg = live_snapshot([waiting], agents, now, ["support", "sales"])
        loop.call_soon_threadsafe(state["hub"].to_watchers, "default", msg)

    th = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True, name="dash-app")
    th.start()
    started.result(60)
    wait_port(port)

    def stop() -> None:
        loop.call_soon_threadsafe(state["stop"].set)
        th.join(30)

    return Dash(f"http://127.0.0.1:{port}", "demo-admin", push), stop


@pytest.fixture
def dash(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Dash]:
    if _lead_app_ready() and not os.environ.get("CTI_DASHBOARD_OWN_APP"):
        live = request.getfixturevalue("live_app")
        app = live.app
        agents = [a.id for a in app.settings.agents]
        queues: list[str | None] = [q.name for q in app.settings.queues] + [None]
        live.run(seed_history(app.db.engine, app.settings, agents, queues))
        queue = app.settings.queues[0].name if app.settings.queues else "support"
        yield Dash(live.base_url, live.tokens["admin"], lambda: live.inject_call("+33612345678", queue))
        return
    d, stop = _own_app(tmp_path)
    try:
        yield d
    finally:
        stop()


CHART_TOTAL = """id => {
  const c = window.ctiDashboard.charts[id];
  if (!c) return -1;
  return c.data.datasets.reduce((a, ds) => a + ds.data.reduce((x, v) => x + (v || 0), 0), 0);
}"""

CANVAS_INK = """id => {
  const cv = document.getElementById(id);
  const data = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
  let n = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i]) n++;
  return n;
}"""


def test_dashboard_loads_draws_charts_and_goes_live(dash: Dash, page: Any) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{dash.base_url}/dashboard?lang=en&token={dash.token}")
    page.wait_for_selector("body[data-loaded]", timeout=20_000)
    assert "token=" not in page.url                      # kept out of the address bar
    assert page.evaluate("localStorage.getItem('cti.token')") == dash.token

    for chart_id in ("chart-agents", "chart-answered", "chart-direction", "chart-sl"):
        assert page.evaluate(CHART_TOTAL, chart_id) > 0, chart_id
        assert page.evaluate(CANVAS_INK, chart_id) > 500, f"{chart_id} drew nothing"
    heat = page.locator("#heatmap td[data-value]:not([data-value='0'])")
    assert heat.count() > 10
    assert int(page.locator("#kpi-calls").inner_text().replace(",", "").replace("\u202f", "")) == 300
    assert page.locator("#queue-table tbody tr").count() >= 2
    assert page.locator("#agent-stats-table tbody tr").count() >= 3
    assert page.locator("#risk-table tbody tr").count() > 0          # accounts at risk, with reasons
    assert page.locator("#callback-table tbody tr").count() > 0      # calls to call back

    page.wait_for_selector("#live-status.on", timeout=15_000)
    before = int(page.evaluate("window.ctiDashboard.liveUpdates"))
    dash.push_live()
    page.wait_for_function(f"window.ctiDashboard.liveUpdates > {before}", timeout=15_000)
    page.wait_for_function(
        "[...document.querySelectorAll('#queue-wall .qcard .big')].some(e => +e.textContent > 0)"
        " || document.querySelectorAll('#call-wall tbody tr').length > 0", timeout=15_000)
    screenshot(page, "dashboard")

    with page.expect_download() as dl:
        page.locator("a.export[data-report='queues']").click()
    text = Path(dl.value.path()).read_text()
    assert text.startswith("queue,offered,")
    assert not errors, errors


def test_dashboard_in_french_and_bad_token(dash: Dash, page: Any) -> None:
    page.goto(f"{dash.base_url}/dashboard?lang=fr&token={dash.token}")
    page.wait_for_selector("body[data-loaded]", timeout=20_000)
    assert page.locator("h1").inner_text() == "Tableau de bord du centre d'appels"
    assert page.locator("#kpis").inner_text().count("Répondus") == 1
    page.locator("#signout").click()
    page.fill("#token-input", "not-a-token")
    page.locator("#signin-form button[type=submit]").click()
    page.wait_for_selector("#signin-error:not(:empty)", timeout=10_000)
    assert "jeton" in page.locator("#signin-error").inner_text().lower()
