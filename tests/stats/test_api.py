"""GET /api/v1/stats/...: validation (422 naming the parameter), scoping (404), CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cti.calls.control import RateLimiter
from cti.clock import ManualClock
from cti.metrics import Metrics
from cti.model import Role
from cti.services import Services
from cti.web.auth import Principal, TokenRecord, TokenStore, hash_token
from cti.web.server import build_web_app

TOKENS = {
    "adm": Principal("root", Role.ADMIN),
    "supA": Principal("sue", Role.SUPERVISOR, teams=frozenset({"A"})),
    "alice": Principal("alice", Role.AGENT),
}


def make_services(engine, settings) -> Services:
    tokens = TokenStore(TokenRecord(Principal(p.user, p.role, p.tenant, p.teams, hash_token(tok)))
                        for tok, p in TOKENS.items())
    return Services(settings=settings, metrics=Metrics(), clock=ManualClock(datetime(2026, 3, 5, tzinfo=UTC)),
                    bus=None, db=SimpleNamespace(engine=engine), tokens=tokens,
                    extra={"failed_auth_limit": RateLimiter(1000)})


@pytest.fixture
async def client(hand_sqlite, settings):
    app = build_web_app(make_services(hand_sqlite, settings))
    async with TestClient(TestServer(app)) as c:
        yield c


async def get(client, path, token="adm", **params):
    return await client.get(f"/api/v1/stats/{path}", params={"from": "2026-03-02", "to": "2026-03-03", **params},
                            headers={"Authorization": f"Bearer {token}"})


@pytest.mark.parametrize(("params", "field"), [
    ({"from": "yesterday"}, "from"),
    ({"to": "2026-13-01"}, "to"),
    ({"from": "2026-03-04", "to": "2026-03-01"}, "from"),
    ({"bucket": "month"}, "bucket"),
    ({"direction": "sideways"}, "direction"),
    ({"format": "xml"}, "format"),
    ({"from": "2020-01-01", "to": "2026-01-01"}, "from"),
    ({"kind": "lost"}, "kind"),
    ({"limit": "lots"}, "limit"),
    ({"queue": "*"}, "queue"),
    ({"agent": "alice,*"}, "agent"),
])
async def test_bad_parameter_is_422_naming_it(client, params, field):
    r = await get(client, "calls-list", **params)
    assert r.status == 422
    body = await r.json()
    assert body["error"]["field"] == field
    assert field in body["error"]["message"] or body["error"]["message"]


async def test_contacted_needs_since(client):
    r = await get(client, "contacted")
    assert r.status == 422 and (await r.json())["error"]["field"] == "since"


async def test_unknown_report_is_404(client):
    assert (await get(client, "bogus")).status == 404


async def test_admin_sees_every_agent(client):
    rows = (await (await get(client, "agents")).json())["rows"]
    assert {r["agent"] for r in rows} == {"alice", "bob", "carol"}


async def test_supervisor_sees_only_their_team(client):
    rows = (await (await get(client, "agents", "supA")).json())["rows"]
    assert {r["agent"] for r in rows} == {"alice", "bob"}
    assert (await get(client, "agents", "supA", agent="carol")).status == 404
    assert (await get(client, "agents", "supA", agent="alice,carol")).status == 404
    assert (await get(client, "hourly", "supA", team="B")).status == 404
    ok = await get(client, "agents", "supA", agent="bob")
    assert [r["agent"] for r in (await ok.json())["rows"]] == ["bob"]
    # queue-level figures are site-wide for supervisors
    assert (await get(client, "queues", "supA")).status == 200


async def test_agent_sees_only_themselves(client):
    rows = (await (await get(client, "agents", "alice")).json())["rows"]
    assert [r["agent"] for r in rows] == ["alice"]
    assert (await get(client, "agents", "alice", agent="bob")).status == 404
    for report in ("queues", "at-risk", "customers", "live"):
        assert (await get(client, report, "alice")).status == 404
    series = (await (await get(client, "hourly", "alice")).json())["rows"]
    assert sum(r["answered"] for r in series) == 3


async def test_no_token_is_401(client):
    r = await client.get("/api/v1/stats/agents")
    assert r.status == 401


async def test_csv_export(client):
    r = await get(client, "queues", format="csv")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in r.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(await r.text())))
    support = next(x for x in rows if x["queue"] == "support")
    assert support["offered"] == "6" and support["service_level"] == "0.4"
    r = await get(client, "at-risk", format="csv")
    rows = list(csv.DictReader(io.StringIO(await r.text())))
    assert rows[0]["account_id"] == "acc1" and "escalated" in rows[0]["reasons"]
    r = await get(client, "contacted", format="csv", since="2026-03-02")
    names = {x["name"] for x in csv.DictReader(io.StringIO(await r.text()))}
    assert names == {"Jean Dupont", "Marie Curie"}


async def test_live_from_store_when_no_router(client):
    r = await get(client, "live")
    snap = await r.json()
    assert snap["type"] == "live"
    support = next(q for q in snap["queues"] if q["name"] == "support")
    assert support["waiting"] == 1   # c11 is still queued
    assert [c["call_id"] for c in snap["calls"]] == ["c11"]
