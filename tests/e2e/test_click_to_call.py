"""Click-to-call in real Chromium: cti.js on a CRM page of another origin (CORS), and the
softphone page bridged to a stand-in of Salesforce Open CTI (sforce.opencti)."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from tests.e2e.conftest import screenshot
from tests.e2e.test_agent_panel import running_live_app

pytestmark = pytest.mark.browser


@pytest.fixture
def live_app(tmp_path, browser):
    yield from running_live_app(tmp_path)


def crm_page(api_base: str, extra_attrs: str = "") -> str:
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Acme CRM</title></head><body>
<h1>Camille Dubois</h1>
<p>Mobile: <a id="mobile" href="tel:06%2012%2034%2056%2078">06 12 34 56 78</a></p>
<p>Premium: <a id="premium" href="tel:+33899123456">08 99 12 34 56</a></p>
<div id="later"></div>
<script>window.ctiCalls = []; document.addEventListener("cti:call", (e) => window.ctiCalls.push(e.detail));</script>
<script src="{api_base}/static/cti.js" data-cti-url="{api_base}" {extra_attrs}></script>
</body></html>"""


def open_crm(page, live, extra_attrs: str = "") -> None:
    """The CRM page lives on another origin (localhost vs 127.0.0.1): calls go through CORS.

    It is written into a real page of that origin (Chromium's private-network rules let a
    loopback page reach the loopback API; a synthetic response would count as public)."""
    port = live.base_url.rsplit(":", 1)[1]
    page.goto(f"http://localhost:{port}/healthz")
    page.set_content(crm_page(live.base_url, extra_attrs))
    page.wait_for_function("typeof window.CTI === 'object'")


def get_call(live, call_id: str, token: str = "demo-admin") -> dict | None:
    req = urllib.request.Request(
        f"{live.base_url}/api/v1/calls/{call_id}", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError:
        return None


def wait_for(pred, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_tel_link_added_later_creates_a_call(live_app, page):
    open_crm(page, live_app, 'data-token="demo-agent-alice"')
    page.evaluate("""document.getElementById('later').innerHTML =
        '<a id="added" href="tel:+33612345678">+33 6 12 34 56 78</a>'""")
    page.wait_for_selector("#added[data-cti-c2c='1']")  # the MutationObserver saw it
    page.click("#added")
    page.wait_for_selector(".cti-toast[data-kind='ok']", timeout=10_000)
    screenshot(page, "click_to_call_toast")
    (created,) = page.evaluate("window.ctiCalls")
    call = wait_for(lambda: get_call(live_app, created["call_id"]), what="call record")
    assert call["to_number"] == "+33612345678" and call["agent"] == "alice" and call["direction"] == "outbound"


def test_blocked_premium_number_is_refused_with_the_reason(live_app, page):
    open_crm(page, live_app, 'data-token="demo-agent-alice"')
    page.click("#premium")
    toast = page.wait_for_selector(".cti-toast[data-kind='error']", timeout=10_000)
    assert "+33899123456" in toast.text_content() and "blocked by policy" in toast.text_content()
    assert page.evaluate("window.ctiCalls") == []


def test_token_is_asked_once_then_kept(live_app, page):
    asked: list[str] = []

    def on_dialog(d):
        asked.append(d.message)
        d.accept("demo-agent-alice")

    page.on("dialog", on_dialog)
    open_crm(page, live_app)
    page.click("#mobile")
    page.wait_for_selector(".cti-toast[data-kind='ok']", timeout=10_000)
    assert page.evaluate("localStorage.getItem('cti.token')") == "demo-agent-alice"
    page.click("#mobile")
    page.wait_for_function("window.ctiCalls.length === 2", timeout=10_000)
    assert len(asked) == 1


OPENCTI_STUB = """
window.openctiLog = [];
window.sforce = {opencti: {
  SCREENPOP_TYPE: {SOBJECT: "sobject", SEARCH: "search", URL: "url"},
  enableClickToDial: (a) => { openctiLog.push(["enableClickToDial"]); a && a.callback && a.callback({success: true}); },
  onClickToDial: (a) => { window.sfDial = a.listener; openctiLog.push(["onClickToDial"]); },
  setSoftphonePanelVisibility: (a) => openctiLog.push(["visible", a.visible]),
  screenPop: (a) => openctiLog.push(["screenPop", a.type, a.params]),
}};
"""


def test_softphone_inside_salesforce_dials_and_pops(live_app, page):
    from tests.e2e.test_agent_panel import CAMILLE, only_agent_available

    only_agent_available(live_app, "alice")
    page.add_init_script(OPENCTI_STUB)
    page.goto(f"{live_app.base_url}/softphone?sfdcIframeOrigin=https://acme.my.salesforce.com&mode=Lightning")
    page.wait_for_selector("#token")
    page.fill("#token", "demo-agent-alice")
    page.click("#signin-btn")
    page.wait_for_selector("#conn[data-state='on']", timeout=10_000)
    page.wait_for_function("window.openctiLog.some(e => e[0] === 'onClickToDial')", timeout=10_000)
    assert ["enableClickToDial"] in page.evaluate("window.openctiLog")
    # a click on a phone field in Salesforce
    page.evaluate("window.sfDial({number: '06 12 34 56 79', recordId: '003000000000001AAA', objectType: 'Contact'})")
    page.wait_for_selector(".toast:has-text('Calling 06 12 34 56 79')", timeout=10_000)
    page.wait_for_selector("#call-dir:has-text('Outbound')", timeout=15_000)
    page.click("#btn-hangup")
    page.wait_for_selector("#no-call:not([hidden])", timeout=15_000)

    live_app.inject_call(CAMILLE, queue="support")
    page.wait_for_function(
        f"window.openctiLog.some(e => e[0] === 'screenPop' && e[2].searchString === '{CAMILLE}')", timeout=15_000
    )
    pops = [e[1:] for e in page.evaluate("window.openctiLog") if e[0] == "screenPop"]
    # ct-0001 is not a Salesforce id: Salesforce is asked to search the number
    assert ["search", {"searchString": CAMILLE}] in pops
    page.wait_for_selector("#contact-card:not([hidden])", timeout=10_000)
    assert page.text_content("#pop-name") == "Camille Dubois"
    screenshot(page, "softphone_opencti")
