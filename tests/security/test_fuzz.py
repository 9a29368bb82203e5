"""Property tests on the JSON edge of a live app: whatever the body, never a 500; an error is JSON
that says what was wrong (and, for a 422, which field); click-to-call never dials a blocked number."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import LiveApp, start_live_app, stop_live_app

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
TOKEN = "demo-agent-alice"

json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**80, max_value=2**80)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=3)
                           | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=8)
weird_strings = st.sampled_from([
    "", " ", "\x00", "+", "++33612345678", "0", "+33 6 12 34 56 78 ext. 99", "tel:+33612345678",
    "sip:alice@evil.example", "+33612345678@evil", "٠٦١٢٣٤٥٦٧٨", "０６１２３４５６７８", "\u202e87654321 60",
    "9" * 300, "+" + "1" * 100_000, "06 12 34 56 78\n+1900", "{\"to\": 1}", "' OR 1=1 --", "%00%2e%2e/",
    "𝟎𝟔𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖", "\ud7ff" * 10,
])
phoneish = st.text(alphabet="+0123456789 ()-./#*", max_size=30)
any_string = st.text(max_size=200) | weird_strings | phoneish


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    app = start_live_app(tmp_path_factory.mktemp("fuzz"))
    try:
        yield app
    finally:
        stop_live_app(app)


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def send(http: requests.Session, live: LiveApp, method: str, path: str, body: Any, *, raw: bool = False,
         token: str = TOKEN) -> requests.Response:
    data = body if raw else json.dumps(body)
    return http.request(method, live.base_url + path, data=data, timeout=30,
                        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})


def check(resp: requests.Response, ok: tuple[int, ...] = (200, 201)) -> dict[str, Any] | list[Any]:
    """Never a server error; a client error is JSON that says what was wrong.

    502 is the documented answer when the provider itself refuses a command (not our bug).
    """
    assert resp.status_code < 500 or resp.status_code == 502, (resp.status_code, resp.text[:500])
    assert resp.headers["Content-Type"].startswith("application/json"), resp.text[:200]
    body = resp.json()
    if resp.status_code not in ok:
        err = body["error"]
        assert err["status"] == resp.status_code and isinstance(err["message"], str) and err["message"]
        if resp.status_code == 422:
            assert isinstance(err.get("field"), str) and err["field"], body
    return body


@FUZZ
@given(to=any_string | json_values, agent=st.none() | st.just("alice") | any_string | json_values)
def test_click_to_call_any_to_and_agent(live: LiveApp, http: requests.Session, to: Any, agent: Any) -> None:
    body: dict[str, Any] = {"to": to} if agent is None else {"to": to, "agent": agent}
    resp = send(http, live, "POST", "/api/v1/calls", body)
    out = check(resp, (201,))
    if resp.status_code == 422:
        assert out["error"]["field"] in ("to", "agent")  # type: ignore[index]


@FUZZ
@given(body=json_values | st.binary(max_size=64))
def test_click_to_call_any_body(live: LiveApp, http: requests.Session, body: Any) -> None:
    check(send(http, live, "POST", "/api/v1/calls", body, raw=isinstance(body, bytes)), (201,))


@FUZZ
@given(prefix=st.sampled_from(["+3389", "+33 89", "+1900", "+44909", "+33899"]),
       rest=st.text(alphabet="0123456789", min_size=4, max_size=12), sep=st.sampled_from(["", " ", "-", "."]))
def test_blocked_and_premium_numbers_are_never_dialled(live: LiveApp, http: requests.Session, prefix: str,
                                                       rest: str, sep: str) -> None:
    resp = send(http, live, "POST", "/api/v1/calls", {"to": prefix + sep + rest}, token="demo-agent-bob")
    out = check(resp, ())
    assert resp.status_code == 422 and out["error"]["field"] == "to", out  # type: ignore[index]


ENDPOINTS = [
    ("PUT", "/api/v1/agents/alice/state", {"state": st.sampled_from(["available", "away", "offline"]) | json_values,
                                           "reason": json_values}),
    ("POST", "/api/v1/calls/{call}/wrap-up", {"disposition": json_values | st.just("resolved"),
                                              "notes": json_values}),
    ("POST", "/api/v1/calls/{call}/transfer", {"target": any_string | json_values,
                                               "mode": st.sampled_from(["blind", "consult"]) | json_values}),
    ("POST", "/api/v1/calls/{call}/record", {"action": st.sampled_from(["start", "stop"]) | json_values}),
    ("POST", "/api/v1/calls/{call}/voicemail-drop", {"message": st.just("callback") | json_values}),
    ("POST", "/api/v1/calls/{call}/dtmf", {"digits": st.text(alphabet="0123456789*#AZ", max_size=5) | json_values}),
    ("POST", "/api/v1/calls/{call}/hold", {"x": json_values}),
    ("POST", "/api/v1/contacts", {"phone": any_string | json_values, "last_name": any_string | json_values,
                                  "first_name": json_values, "email": any_string | json_values,
                                  "account_name": json_values, "call_id": json_values}),
    ("PUT", "/api/v1/calls/{call}/contact", {"contact_id": any_string | json_values, "account_id": json_values}),
    ("POST", "/api/v1/admin/tokens/revoke", {"token": json_values, "token_sha256": json_values}),
]


@pytest.fixture(scope="module")
def alice_call(live: LiveApp, http: requests.Session) -> str:
    """A live click-to-call of alice's, so call actions get past 'not found' into validation."""
    resp = send(http, live, "POST", "/api/v1/calls", {"to": "+33612345679"}, token="demo-agent-alice")
    assert resp.status_code == 201, resp.text
    return resp.json()["call_id"]


@pytest.mark.parametrize(("method", "path", "fields"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS])
def test_json_endpoints_with_wrong_types_in_every_field(live: LiveApp, http: requests.Session, alice_call: str,
                                                        method: str, path: str, fields: dict[str, Any]) -> None:
    url = path.format(call=alice_call)
    token = "demo-admin" if "admin" in path else TOKEN

    @FUZZ
    @given(body=st.fixed_dictionaries({}, optional=fields) | json_values)
    def run(body: Any) -> None:
        check(send(http, live, method, url, body, token=token))

    run()
