"""HTTP routes the pop needs on top of docs/api.md (mounted by the server as extra routes).

- `POST /api/v1/contacts` `{"phone", "first_name"?, "last_name", "email"?, "account_name"?, "call_id"?}`
  -> 201 ContactView: the pop's new-contact form. With `call_id`, the call (and so its
  activity) is attached to the new contact.
- `PUT /api/v1/calls/{call_id}/contact` `{"contact_id", "account_id"?}` -> 200: the
  contact the agent picked in the chooser; the call's one activity goes to it.

Authorization as everywhere: a call you may not control is a 404.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from aiohttp import web

from cti.crm.base import CrmError, contact_view
from cti.store.tables import calls
from cti.web.common import ApiError, json_body, load_call_row, principal, services

routes = web.RouteTableDef()


def _team(svc: Any, agent: str | None) -> str | None:
    for a in svc.settings.agents:
        if a.id == agent:
            return a.team
    return None


async def _call_row(svc: Any, call_id: str) -> Any:
    async with svc.db.engine.connect() as conn:
        return (
            await conn.execute(
                sa.select(calls.c.call_id, calls.c.agent, calls.c.tenant).where(calls.c.call_id == call_id)
            )
        ).first()


async def _own_call(svc: Any, p: Any, call_id: str) -> Any:
    pop = getattr(svc, "screen_pop", None)
    on_screen = pop is not None and pop.pop_for(call_id, p.user) is not None
    row = await load_call_row(lambda: _call_row(svc, call_id), on_screen=on_screen)
    if row is None or not p.can_control_call(row.agent, _team(svc, row.agent), row.tenant):
        raise ApiError(404, "call not found")
    return row


def _text(body: dict[str, Any], key: str, *, required: bool = False, max_len: int = 200) -> str | None:
    v = body.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        if required:
            raise ApiError(422, f"'{key}' is required", field=key)
        return None
    if not isinstance(v, str) or len(v) > max_len:
        raise ApiError(422, f"'{key}' must be text (at most {max_len} characters)", field=key)
    return v.strip()


@routes.post("/api/v1/contacts")
async def create_contact(request: web.Request) -> web.Response:
    p = principal(request)
    svc = services(request)
    body = await json_body(request)
    call_id = _text(body, "call_id", max_len=64)
    if call_id:
        await _own_call(svc, p, call_id)
    create = getattr(svc.crm, "create_contact", None)
    if create is None:
        raise ApiError(422, f"the configured CRM ({getattr(svc.crm, 'name', '?')}) cannot create contacts")
    try:
        contact = await create(
            phone=_text(body, "phone", required=True, max_len=64),
            first_name=_text(body, "first_name"),
            last_name=_text(body, "last_name", required=True),
            email=_text(body, "email"),
            account_name=_text(body, "account_name"),
        )
    except CrmError as exc:
        msg = str(exc)
        raise ApiError(422, msg, field="phone" if msg.startswith("phone") else None) from None
    pop = getattr(svc, "screen_pop", None)
    if pop is not None:
        for number in contact.phones:
            pop.lookup.invalidate(number)  # the next call from this number finds the new contact
    if call_id:
        if pop is not None:
            await pop.attach_contact(call_id, contact)
        async with svc.db.engine.begin() as conn:
            await conn.execute(
                calls.update()
                .where(calls.c.call_id == call_id)
                .values(contact_id=contact.id, account_id=contact.account_id)
            )
    return web.json_response(contact_view(contact), status=201)


@routes.put("/api/v1/calls/{call_id}/contact")
async def set_call_contact(request: web.Request) -> web.Response:
    p = principal(request)
    svc = services(request)
    call_id = request.match_info["call_id"]
    await _own_call(svc, p, call_id)
    body = await json_body(request)
    contact_id = _text(body, "contact_id", required=True, max_len=64)
    account_id = _text(body, "account_id", max_len=64)
    pop = getattr(svc, "screen_pop", None)
    if pop is not None:
        chosen = pop.match_for(call_id, contact_id)
        if chosen is not None:
            await pop.attach_contact(call_id, chosen)
            account_id = account_id or chosen.account_id
    async with svc.db.engine.begin() as conn:
        await conn.execute(
            calls.update().where(calls.c.call_id == call_id).values(contact_id=contact_id, account_id=account_id)
        )
    return web.json_response({"ok": True, "call_id": call_id, "contact_id": contact_id, "account_id": account_id})
