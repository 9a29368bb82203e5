"""Supervision end to end: the supervisor clicks Whisper on the live call wall and the agent's
panel shows that they are being coached; the session is audited and listed by the API."""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.e2e.conftest import screenshot, start_live_app, stop_live_app

CAMILLE = "+33612345678"


@pytest.fixture
def live(tmp_path, browser):
    # started from a worker thread: Playwright's sync API runs a loop in the test thread
    with ThreadPoolExecutor(1) as pool:
        app = pool.submit(start_live_app, tmp_path).result(120)
    try:
        yield app
    finally:
        stop_live_app(app)


def api(live: Any, method: str, path: str, token: str, body: dict | None = None) -> Any:
    req = urllib.request.Request(live.base_url + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def wait_for(pred, timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_supervisor_whispers_and_the_agent_sees_the_coaching_indicator(live, browser) -> None:
    from cti.model import AgentState

    async def only_alice() -> None:
        for a in live.app.settings.agents:
            if a.id != "alice":
                await live.app.router.set_agent_state(a.id, AgentState.OFFLINE, None)

    live.run(only_alice())
    agent_ctx = browser.new_context()
    sup_ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    agent_page, sup_page = agent_ctx.new_page(), sup_ctx.new_page()
    try:
        agent_page.goto(f"{live.base_url}/agent?token=demo-agent-alice")
        call_id = live.inject_call(CAMILLE, queue="support")
        agent_page.wait_for_selector("#call-state[data-state='ringing']", timeout=15_000)
        agent_page.click("#btn-answer")
        agent_page.wait_for_selector("#call-state[data-state='answered']", timeout=10_000)

        sup_page.goto(f"{live.base_url}/dashboard?token=demo-supervisor")
        button = f"#call-wall tr[data-call='{call_id}'] button[data-mode='whisper']"
        sup_page.wait_for_selector(button, timeout=15_000)
        assert "Camille Dubois" in sup_page.text_content(f"#call-wall tr[data-call='{call_id}']")
        sup_page.click(button)

        agent_page.wait_for_selector("#coach:not([hidden])", timeout=10_000)
        assert agent_page.get_attribute("#coach", "data-mode") == "whisper"
        assert "sam" in agent_page.text_content("#coach")
        screenshot(agent_page, "agent_panel_coached")
        screenshot(sup_page, "dashboard_whisper")

        sessions = wait_for(lambda: api(live, "GET", "/api/v1/monitor-sessions", "demo-supervisor"),
                            what="monitor session")
        s = sessions[0]
        assert (s["call_id"], s["supervisor"], s["agent"], s["mode"]) == (call_id, "sam", "alice", "whisper")
        # the agent cannot see or start supervision
        assert api(live, "GET", "/api/v1/monitor-sessions", "demo-agent-alice") == []
    finally:
        agent_ctx.close()
        sup_ctx.close()
