"""The agent panel in real headless Chromium against the live app (demo world).

An agent signs in with a token, a known customer calls, the pop shows who it is,
the call ends and the wrap-up lands in the call's one activity. Screenshots go to
test-artifacts/.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from tests.e2e.conftest import screenshot, start_live_app, stop_live_app

pytestmark = pytest.mark.browser


def running_live_app(tmp_path):
    """The conftest's live app, started from a worker thread: Playwright's sync API keeps an
    event loop running in the test thread, where the app's start-up asyncio.run would fail."""
    with ThreadPoolExecutor(1) as pool:
        live = pool.submit(start_live_app, tmp_path).result(120)
    try:
        yield live
    finally:
        stop_live_app(live)


@pytest.fixture
def live_app(tmp_path, browser):
    yield from running_live_app(tmp_path)


CAMILLE = "+33612345678"  # ct-0001 Camille Dubois (Mistral Énergie), mobile "06 12 34 56 78" in the CSV


def only_agent_available(live, agent: str) -> None:
    from cti.model import AgentState

    async def go() -> None:
        for a in live.app.settings.agents:
            if a.id != agent:
                await live.app.router.set_agent_state(a.id, AgentState.OFFLINE, None)

    live.run(go())


def wait_for(pred, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def sign_in(page, base: str, token: str, lang: str = "en") -> None:
    page.goto(f"{base}/agent?lang={lang}")
    page.fill("#token", token)
    page.click("#signin-btn")
    page.wait_for_selector("#conn[data-state='on']", timeout=10_000)


def activity_row(live, call_id: str):
    async def get():
        from cti.store.tables import activities

        async with live.app.db.engine.connect() as conn:
            return (await conn.execute(sa.select(activities).where(activities.c.call_id == call_id))).all()

    return live.run(get())


def test_known_caller_pops_then_wrap_up_saves_the_disposition(live_app, page):
    only_agent_available(live_app, "alice")
    sign_in(page, live_app.base_url, "demo-agent-alice")
    page.wait_for_selector("#state-now[data-state='available']")

    call_id = live_app.inject_call(CAMILLE, queue="support")
    page.wait_for_selector("#contact-card:not([hidden])", timeout=15_000)
    assert page.text_content("#pop-name") == "Camille Dubois"
    assert page.text_content("#pop-account") == "Mistral Énergie"
    assert "Camille" in page.text_content("#script") and "Alice" in page.text_content("#script")
    page.wait_for_selector("#call-state[data-state='ringing']")
    screenshot(page, "agent_panel_pop")

    page.click("#btn-answer")
    page.wait_for_selector("#call-state[data-state='answered']", timeout=10_000)
    page.click("#btn-hangup")
    page.wait_for_selector("#wrapup:not([hidden])", timeout=15_000)
    assert page.text_content("#wrapup-call") == "Camille Dubois"  # the pop stays for the wrap-up
    assert page.text_content("#pop-name") == "Camille Dubois"
    page.select_option("#disposition", "resolved")
    page.fill("#notes", "Invoice explained")
    screenshot(page, "agent_panel_wrap_up")
    page.click("#wrapup-save")
    page.wait_for_selector("#wrapup", state="hidden", timeout=10_000)

    (row,) = wait_for(lambda: [r for r in activity_row(live_app, call_id) if r.disposition], what="activity")
    assert row.disposition == "resolved" and row.notes == "Invoice explained"
    assert row.contact_id == "ct-0001" and row.agent == "alice"


def test_unknown_caller_gets_the_new_contact_form_in_french(live_app, page):
    only_agent_available(live_app, "alice")
    sign_in(page, live_app.base_url, "demo-agent-alice", lang="fr")
    live_app.inject_call("+33655500011", queue="support")
    page.wait_for_selector("#new-contact:not([hidden])", timeout=15_000)
    assert page.input_value("#new-contact input[name=phone]") == "+33655500011"
    assert page.text_content("#new-contact button[type=submit]") == "Créer le contact"
    page.fill("#new-contact input[name=first_name]", "Zoé")
    page.fill("#new-contact input[name=last_name]", "Petit")
    page.click("#new-contact button[type=submit]")
    page.wait_for_selector("#contact-card:not([hidden]), .toast.error", timeout=10_000)
    errors = page.locator(".toast.error").all_text_contents()
    assert not errors, f"contact not created: {errors} (is cti.crm.web.routes mounted?)"
    assert page.text_content("#pop-name") == "Zoé Petit"
    page.wait_for_selector("#script:has-text('Bonjour Zoé, Alice')", timeout=10_000)  # the pop was rebuilt
    screenshot(page, "agent_panel_new_contact_fr")


def test_reconnect_restores_the_pop_from_the_snapshot(live_app, page):
    only_agent_available(live_app, "alice")
    sign_in(page, live_app.base_url, "demo-agent-alice")
    live_app.inject_call(CAMILLE, queue="support")
    page.wait_for_selector("#contact-card:not([hidden])", timeout=15_000)
    live_app.run(live_app.app.hub.close_all())  # the server drops every socket (restart, LB failover)
    page.wait_for_selector("#conn[data-state='wait']", timeout=5_000)
    page.wait_for_selector("#conn[data-state='on']", timeout=10_000)  # back by itself
    assert page.text_content("#pop-name") == "Camille Dubois"
    page.reload()  # token from localStorage, state from the snapshot
    page.wait_for_selector("#conn[data-state='on']", timeout=10_000)
    page.wait_for_selector("#contact-card:not([hidden])", timeout=10_000)
    assert page.text_content("#pop-name") == "Camille Dubois"


def test_bad_token_is_refused(live_app, page):
    page.goto(f"{live_app.base_url}/agent")
    page.fill("#token", "not-a-token")
    page.click("#signin-btn")
    page.wait_for_selector("#signin-error:has-text('not valid')")


def api_post(live, path: str, body: dict, token: str) -> tuple[int, dict]:
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        f"{live.base_url}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_supervisor_whisper_shows_the_coaching_indicator(live_app, page):
    only_agent_available(live_app, "alice")
    sign_in(page, live_app.base_url, "demo-agent-alice")
    call_id = live_app.inject_call(CAMILLE, queue="support")
    page.wait_for_selector("#btn-answer:not([hidden])", timeout=15_000)
    page.click("#btn-answer")
    page.wait_for_selector("#call-state[data-state='answered']", timeout=10_000)
    status, body = api_post(live_app, f"/api/v1/calls/{call_id}/monitor", {"mode": "whisper"}, "demo-supervisor")
    assert status == 200, body
    page.wait_for_selector("#coach:not([hidden])", timeout=10_000)
    assert page.text_content("#coach") == "Coached by sam"
    screenshot(page, "agent_panel_coached")


def test_dial_pad_places_an_outbound_call(live_app, page):
    only_agent_available(live_app, "alice")
    sign_in(page, live_app.base_url, "demo-agent-alice")
    for key in "0612345678":
        page.click(f"#dialpad button[data-key='{key}']")
    assert page.input_value("#dial-number") == "0612345678"
    page.click("#dial-btn")
    page.wait_for_selector(".toast:not(.error)", timeout=10_000)
    page.wait_for_selector("#call:not([hidden])", timeout=15_000)
    assert page.text_content("#call-dir") == "Outbound"


def test_voicemail_drop_frees_the_agent_at_once(live_app, page):
    only_agent_available(live_app, "alice")
    sign_in(page, live_app.base_url, "demo-agent-alice")
    page.fill("#dial-number", "06 12 34 56 78")
    page.click("#dial-btn")
    page.wait_for_selector("#vm-form:not([hidden])", timeout=15_000)
    page.select_option("#vm-message", "callback")
    page.click("#vm-drop")
    page.wait_for_selector(".toast:has-text('Message left')", timeout=10_000)
    page.wait_for_selector("#no-call:not([hidden])", timeout=5_000)
    time.sleep(1.5)  # later updates of the call (the message still playing) must not bring it back
    assert page.is_visible("#no-call") and not page.is_visible("#call")


def test_agent_goes_away_with_a_reason_then_back(live_app, page):
    sign_in(page, live_app.base_url, "demo-agent-alice")
    page.wait_for_selector("#state-now[data-state='available']")
    page.select_option("#state", "away")
    page.wait_for_selector("#away-reason:not([hidden])")
    page.select_option("#away-reason", "lunch")
    page.wait_for_selector("#state-now:has-text('Away · Lunch')", timeout=10_000)
    agents = live_app.run(_agent_state(live_app, "alice"))
    assert agents == ("away", "lunch")
    page.select_option("#state", "available")
    page.wait_for_selector("#state-now[data-state='available']", timeout=10_000)


async def _agent_state(live, agent: str) -> tuple[str, str | None]:
    st = live.app.directory.state_of(agent)
    return st["state"], st.get("reason")


def test_timed_after_call_work_shows_a_countdown(live_app, page):
    import re
    from datetime import UTC, datetime, timedelta

    sign_in(page, live_app.base_url, "demo-agent-alice")
    until = (datetime.now(UTC) + timedelta(seconds=90)).isoformat()
    msg = {
        "type": "wrap_up",
        "call_id": "call-x",
        "agent": "alice",
        "until": until,
        "dispositions": ["resolved", "sale"],
    }
    tenant = live_app.app.settings.site.tenant
    # the panel's socket may still be connecting under load: send once it is there
    wait_for(lambda: live_app.call_soon(lambda: live_app.app.hub.to_agent(tenant, "alice", msg)) == 1,
             what="alice's socket")
    page.wait_for_selector("#wrapup-countdown:not([hidden])", timeout=10_000)
    assert re.fullmatch(r"1:[0-3]\d left", page.text_content("#wrapup-countdown"))
    assert page.locator("#disposition option").all_text_contents() == ["— choose —", "Resolved", "Sale"]
