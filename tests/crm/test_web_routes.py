"""The pop's contact routes: create a contact from the new-contact form, attach the chosen one."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cti.calls import repo
from cti.clock import ManualClock
from cti.config import Settings
from cti.crm.cache import CachedLookup
from cti.crm.local import LocalConnector
from cti.crm.web import routes
from cti.model import Role
from cti.routing.screen_pop import ScreenPop
from cti.services import Services
from cti.store.tables import calls, contacts
from cti.web.auth import Principal
from cti.web.common import SERVICES, ApiError
from tests.routing.test_screen_pop import ringing


class _Db:
    def __init__(self, engine):
        self.engine = engine


async def client_for(engine, user: str = "alice", role: Role = Role.AGENT) -> TestClient:
    settings = Settings.model_validate(
        {"agents": [{"id": "alice", "name": "Alice", "team": "support"}, {"id": "bob", "name": "Bob", "team": "sales"}]}
    )
    crm = LocalConnector(engine)

    async def publish(msg):
        return None

    pop = ScreenPop(CachedLookup(crm, ManualClock()), engine, settings, publish=publish)
    svc = Services(
        settings=settings,
        metrics=None,
        clock=ManualClock(),
        bus=None,
        db=_Db(engine),
        tokens=None,
        crm=crm,
        screen_pop=pop,
    )

    @web.middleware
    async def mw(request, handler):
        request["principal"] = Principal(user=user, role=role)
        try:
            return await handler(request)
        except ApiError as exc:
            return web.json_response(exc.body(), status=exc.status)

    app = web.Application(middlewares=[mw])
    app[SERVICES] = svc
    app.router.add_routes(routes)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def add_call(engine, call_id: str, agent: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            calls.insert().values(
                call_id=call_id,
                tenant="default",
                provider="sim",
                provider_call_id=call_id,
                direction="inbound",
                state="ringing",
                agent=agent,
            )
        )


async def test_new_contact_form_creates_the_contact_and_attaches_it_to_the_call(lite_engine):
    await add_call(lite_engine, "call-1", "alice")
    client = await client_for(lite_engine)
    try:
        r = await client.post(
            "/api/v1/contacts",
            json={"phone": "06 55 44 33 22", "first_name": "Zoé", "last_name": "Petit", "call_id": "call-1"},
        )
        assert r.status == 201
        c = await r.json()
        assert c["name"] == "Zoé Petit" and c["phones"] == ["+33655443322"]
        r = await client.post("/api/v1/contacts", json={"phone": "not a number", "last_name": "X"})
        assert r.status == 422 and (await r.json())["error"]["field"] == "phone"
        r = await client.post("/api/v1/contacts", json={"phone": "0655443322"})
        assert r.status == 422 and (await r.json())["error"]["field"] == "last_name"
    finally:
        await client.close()
    async with lite_engine.connect() as conn:
        assert (await conn.execute(sa.select(calls.c.contact_id))).scalar() == c["id"]


async def test_chooser_attaches_a_contact_only_to_calls_you_control(lite_engine):
    await add_call(lite_engine, "call-1", "alice")
    await add_call(lite_engine, "call-2", "bob")
    client = await client_for(lite_engine)
    try:
        r = await client.put("/api/v1/calls/call-1/contact", json={"contact_id": "c-4", "account_id": "acc-acme"})
        assert r.status == 200
        r = await client.put("/api/v1/calls/call-2/contact", json={"contact_id": "c-4"})
        assert r.status == 404  # bob's call: not yours, not found
        r = await client.put("/api/v1/calls/nope/contact", json={"contact_id": "c-4"})
        assert r.status == 404
    finally:
        await client.close()
    async with lite_engine.connect() as conn:
        rows = dict((await conn.execute(sa.select(calls.c.call_id, calls.c.contact_id))).all())
    assert rows == {"call-1": "c-4", "call-2": None}


async def test_a_contact_made_from_a_pop_waits_for_the_call_row_the_store_has_not_written_yet(lite_engine):
    # the pop goes to the browser straight from the event; the store writer lingers, and
    # lags under load: an agent quick to fill the form used to get "call not found" (CI)
    client = await client_for(lite_engine)
    pop = client.server.app[SERVICES].screen_pop
    try:
        await pop.on_event(ringing("call-9", "alice", "+33655500011"))
        await pop.drain()
        assert pop.pop_for("call-9", "alice") is not None
        late_row = asyncio.get_running_loop().call_later(
            0.3, lambda: asyncio.ensure_future(add_call(lite_engine, "call-9", "alice"))
        )
        r = await client.post(
            "/api/v1/contacts", json={"phone": "+33655500011", "last_name": "Petit", "call_id": "call-9"}
        )
        assert r.status == 201, await r.text()
        c = await r.json()
        # a call nobody has a pop for is not waited for
        r = await client.put("/api/v1/calls/nope/contact", json={"contact_id": "c-4"})
        assert r.status == 404
    finally:
        late_row.cancel()
        await client.close()
    async with lite_engine.connect() as conn:
        row = (await conn.execute(sa.select(calls.c.contact_id).where(calls.c.call_id == "call-9"))).first()
    assert row.contact_id == c["id"]


async def test_a_call_row_that_never_comes_is_a_503_and_creates_no_contact(lite_engine, monkeypatch):
    monkeypatch.setattr(repo, "CALL_ROW_WAIT_S", 0.2)
    client = await client_for(lite_engine)
    pop = client.server.app[SERVICES].screen_pop
    try:
        await pop.on_event(ringing("call-8", "alice", "+33655500012"))
        await pop.drain()
        r = await client.post(
            "/api/v1/contacts", json={"phone": "+33655500012", "last_name": "Roux", "call_id": "call-8"}
        )
        assert r.status == 503
        assert "not stored yet" in (await r.json())["error"]["message"]
    finally:
        await client.close()
    async with lite_engine.connect() as conn:
        made = await conn.execute(sa.select(contacts.c.id).where(contacts.c.last_name == "Roux"))
        assert made.all() == []  # the form can be sent again without making the contact twice
