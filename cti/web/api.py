"""REST API v1 (docs/api.md). Handlers validate at the edge and call services;
authorization decisions live in the services and in `Principal`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from aiohttp import web

from cti.calls.control import ControlError
from cti.model import Role
from cti.store import tables as t
from cti.web.auth import Principal
from cti.web.common import ApiError, json_body, not_found, principal, services

routes = web.RouteTableDef()

CALL_ACTIONS = ("answer", "hangup", "hold", "unhold", "transfer", "record", "voicemail-drop", "monitor", "dtmf")


def _control_error(exc: ControlError) -> ApiError:
    return ApiError(exc.status, exc.message, exc.field, **exc.extra)


def _iso(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


def agent_view(svc: Any, agent_id: str) -> dict[str, Any] | None:
    directory = svc.extra["directory"]
    a = directory.agents.get(agent_id)
    if a is None:
        return None
    st = directory.state_of(agent_id)
    return {
        "id": a.id, "name": a.name, "team": a.team, "skills": dict(a.skills),
        "endpoint": next(iter(a.endpoints.values()), None),
        "state": st["state"], "reason": st.get("reason"), "since": st.get("since"),
        "calls": directory.calls_of(agent_id),
    }


def visible_agents(svc: Any, p: Principal) -> list[str]:
    directory = svc.extra["directory"]
    return [a.id for a in directory.agents.values() if p.can_see_agent(a.id, a.team, directory.tenant)]


@routes.get("/api/v1/me")
async def me(request: web.Request) -> web.Response:
    p = principal(request)
    svc = services(request)
    return web.json_response({
        "user": p.user, "role": p.role.value, "teams": sorted(p.teams), "tenant": p.tenant,
        "agent": agent_view(svc, p.user), "language": svc.settings.site.language,
    })


@routes.get("/api/v1/agents")
async def list_agents(request: web.Request) -> web.Response:
    p = principal(request)
    svc = services(request)
    return web.json_response([agent_view(svc, a) for a in visible_agents(svc, p)])


def _agent_or_404(svc: Any, p: Principal, agent_id: str) -> Any:
    directory = svc.extra["directory"]
    a = directory.agents.get(agent_id)
    if a is None or not p.can_see_agent(a.id, a.team, directory.tenant):
        raise not_found(f"agent {agent_id}")
    return a


@routes.get("/api/v1/agents/{agent_id}/state")
async def get_agent_state(request: web.Request) -> web.Response:
    svc = services(request)
    a = _agent_or_404(svc, principal(request), request.match_info["agent_id"])
    st = svc.extra["directory"].state_of(a.id)
    return web.json_response({"agent": a.id, **st})


@routes.put("/api/v1/agents/{agent_id}/state")
async def put_agent_state(request: web.Request) -> web.Response:
    svc = services(request)
    a = _agent_or_404(svc, principal(request), request.match_info["agent_id"])
    body = await json_body(request)
    state = body.get("state")
    if state not in ("available", "away", "offline"):
        raise ApiError(422, "'state' must be available, away or offline", field="state")
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 64):
        raise ApiError(422, "'reason' must be a short text", field="reason")
    try:
        st = await svc.extra["set_agent_state"](a.id, state, reason)
    except ControlError as exc:
        raise _control_error(exc) from None
    return web.json_response({"agent": a.id, **st})


@routes.get("/api/v1/queues")
async def list_queues(request: web.Request) -> web.Response:
    principal(request)
    svc = services(request)
    live = svc.extra["live"]()
    by_name = {q["name"]: q for q in live.get("queues", [])}
    out = []
    for q in svc.extra["routing_settings"]().queues:
        lq = by_name.get(q.name, {})
        out.append({
            "name": q.name, "numbers": q.numbers, "strategy": q.strategy, "requires": q.requires,
            "waiting": lq.get("waiting", 0), "oldest_wait_s": lq.get("oldest_wait_s", 0.0),
            "agents": lq.get("agents", {}),
        })
    return web.json_response(out)


@routes.get("/api/v1/dispositions")
async def dispositions(request: web.Request) -> web.Response:
    principal(request)
    return web.json_response(list(services(request).extra["routing_settings"]().dispositions))


@routes.get("/api/v1/voicemail-messages")
async def voicemail_messages(request: web.Request) -> web.Response:
    principal(request)
    return web.json_response(services(request).control.voicemail_messages())


# ---- calls ----------------------------------------------------------------------

@routes.post("/api/v1/calls")
async def create_call(request: web.Request) -> web.Response:
    p = principal(request)
    svc = services(request)
    body = await json_body(request)
    agent = body.get("agent")
    if agent is not None and not isinstance(agent, str):
        raise ApiError(422, "'agent' must be an agent id", field="agent")
    try:
        out = await svc.control.click_to_call(p, body.get("to"), agent)
    except ControlError as exc:
        err = _control_error(exc)
        if exc.status == 429:
            retry = str(exc.extra.get("retry_after", 60))
            return web.json_response(err.body(), status=429, headers={"Retry-After": retry})
        raise err from None
    return web.json_response(out, status=201)


def _parse_time(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(422, f"'{name}' must be an ISO date or datetime", field=name) from None
    if dt.tzinfo is None:
        from zoneinfo import ZoneInfo

        dt = dt.replace(tzinfo=ZoneInfo(services(request).settings.site.timezone))
    return dt


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise ApiError(422, f"'{name}' must be an integer", field=name) from None
    if not lo <= v <= hi:
        raise ApiError(422, f"'{name}' must be between {lo} and {hi}", field=name)
    return v


def call_row_view(row: Any, contact_names: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    d = {k: _iso(v) for k, v in dict(row._mapping).items()}
    d["agents_rung"] = d.get("agents_rung") or []
    cid = d.get("contact_id")
    d["contact"] = (contact_names or {}).get(cid) if cid else None
    return d


async def contact_names(conn: Any, ids: set[str]) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    q = (
        sa.select(t.contacts.c.id, t.contacts.c.first_name, t.contacts.c.last_name, t.accounts.c.name)
        .select_from(t.contacts.outerjoin(t.accounts, t.contacts.c.account_id == t.accounts.c.id))
        .where(t.contacts.c.id.in_(ids))
    )
    out = {}
    for r in (await conn.execute(q)).all():
        name = " ".join(x for x in (r[1], r[2]) if x)
        out[r[0]] = {"id": r[0], "name": name, "account_name": r[3]}
    return out


@routes.get("/api/v1/calls")
async def list_calls(request: web.Request) -> web.Response:
    p = principal(request)
    svc = services(request)
    since, until = _parse_time(request, "since"), _parse_time(request, "until")
    limit = _int_param(request, "limit", 100, 1, 1000)
    offset = _int_param(request, "offset", 0, 0, 10_000_000)
    c = t.calls.c
    q = sa.select(t.calls).where(c.tenant == p.tenant)
    if since:
        q = q.where(c.created_at >= since)
    if until:
        q = q.where(c.created_at < until)
    for name in ("agent", "queue", "direction"):
        if request.query.get(name):
            q = q.where(getattr(c, name) == request.query[name])
    state = request.query.get("state")
    if state == "active":
        q = q.where(t.CALL_OPEN)
    elif state == "ended":
        q = q.where(c.state == "ended")
    elif state is not None:
        raise ApiError(422, "'state' must be active or ended", field="state")
    if p.role is not Role.ADMIN:
        allowed = visible_agents(svc, p)
        q = q.where(c.agent.in_(allowed))
    q = q.order_by(c.created_at.desc()).limit(limit).offset(offset)
    async with svc.db.engine.connect() as conn:
        rows = (await conn.execute(q)).all()
        names = await contact_names(conn, {r.contact_id for r in rows if r.contact_id})
    return web.json_response([call_row_view(r, names) for r in rows])


def _transcript_content(svc: Any, tr: Any) -> tuple[Any, Any, Any]:
    """Text and segments, decrypted when stored sealed (security.encryption_key)."""
    from cti.security.crypto import DecryptError, transcript_content

    try:
        text, segments = transcript_content(svc.settings.security.encryption_key, tr)
    except DecryptError as exc:  # key missing or rotated: say so instead of failing the whole call
        return None, None, str(exc)
    return text, segments, tr.error


@routes.get("/api/v1/calls/{call_id}")
async def get_call(request: web.Request) -> web.Response:
    p = principal(request)
    svc = services(request)
    call_id = request.match_info["call_id"]
    directory = svc.extra["directory"]
    async with svc.db.engine.connect() as conn:
        row = (await conn.execute(sa.select(t.calls).where(t.calls.c.call_id == call_id))).first()
        if row is None or not p.can_see_agent(row.agent, directory.team_of(row.agent), row.tenant):
            raise not_found("call")
        names = await contact_names(conn, {row.contact_id} if row.contact_id else set())
        out = call_row_view(row, names)
        ev = (await conn.execute(
            sa.select(t.call_events.c.payload).where(t.call_events.c.call_id == call_id)
            .order_by(t.call_events.c.occurred_at, t.call_events.c.seq)
        )).scalars().all()
        out["events"] = list(ev)
        act = (await conn.execute(sa.select(t.activities).where(t.activities.c.call_id == call_id))).first()
        out["activity"] = {k: _iso(v) for k, v in dict(act._mapping).items()} if act else None
        tr = (await conn.execute(sa.select(t.transcripts).where(t.transcripts.c.call_id == call_id))).first()
        if tr is not None:
            text, segments, error = _transcript_content(svc, tr)
            out["transcript"] = {"status": tr.status, "text": text, "segments": segments,
                                 "error": error, "model": tr.model, "language": tr.language}
            out["summary"] = tr.summary
        else:
            out["transcript"] = None
            out["summary"] = None
        dec = (await conn.execute(
            sa.select(t.routing_decisions).where(t.routing_decisions.c.call_id == call_id)
            .order_by(t.routing_decisions.c.decided_at)
        )).all()
        out["decisions"] = [
            {"decided_at": _iso(d.decided_at), "queue": d.queue, "chosen": d.chosen, "reason": d.reason,
             "candidates": d.candidates}
            for d in dec
        ]
        mons = (await conn.execute(
            sa.select(t.monitor_sessions).where(t.monitor_sessions.c.call_id == call_id)
        )).all()
        out["monitor_sessions"] = [{k: _iso(v) for k, v in dict(m._mapping).items()} for m in mons]
    return web.json_response(out)


@routes.post("/api/v1/calls/{call_id}/wrap-up")
async def wrap_up(request: web.Request) -> web.Response:
    p = principal(request)
    svc = services(request)
    body = await json_body(request)
    disposition = body.get("disposition")
    allowed = svc.extra["routing_settings"]().dispositions
    if disposition is not None and disposition not in allowed:
        raise ApiError(422, f"'disposition' must be one of {', '.join(allowed)}", field="disposition")
    notes = body.get("notes")
    if notes is not None and (not isinstance(notes, str) or len(notes) > 10_000):
        raise ApiError(422, "'notes' must be text (at most 10,000 characters)", field="notes")
    call_id = request.match_info["call_id"]
    try:
        out = await svc.extra["wrap_up"](p, call_id, disposition, notes)
    except ControlError as exc:
        raise _control_error(exc) from None
    return web.json_response(out)


@routes.post("/api/v1/calls/{call_id}/{action}")
async def call_action(request: web.Request) -> web.Response:
    p = principal(request)
    svc = services(request)
    action = request.match_info["action"]
    if action not in CALL_ACTIONS:
        raise not_found(f"action {action}")
    body = await json_body(request) if request.can_read_body else {}
    try:
        out = await svc.control.act(p, request.match_info["call_id"], action, body)
    except ControlError as exc:
        raise _control_error(exc) from None
    return web.json_response(out)


@routes.get("/api/v1/monitor-sessions")
async def monitor_sessions(request: web.Request) -> web.Response:
    p = principal(request)
    svc = services(request)
    if not p.can_monitor():
        return web.json_response([])
    c = t.monitor_sessions.c
    q = sa.select(t.monitor_sessions).where(c.tenant == p.tenant)
    if p.role is not Role.ADMIN:
        q = q.where(c.agent.in_(visible_agents(svc, p)))
    q = q.order_by(c.started_at.desc()).limit(_int_param(request, "limit", 100, 1, 1000))
    async with svc.db.engine.connect() as conn:
        rows = (await conn.execute(q)).all()
    return web.json_response([{k: _iso(v) for k, v in dict(r._mapping).items()} for r in rows])


@routes.post("/api/v1/admin/tokens/revoke")
async def revoke_token(request: web.Request) -> web.Response:
    p = principal(request)
    if not p.is_admin():
        raise not_found("resource")
    body = await json_body(request)
    from cti.web.auth import hash_token

    token, given_hash = body.get("token"), body.get("token_sha256")
    if given_hash is not None and not isinstance(given_hash, str):
        raise ApiError(422, "'token_sha256' must be a hex string", field="token_sha256")
    if token is not None and not isinstance(token, str):
        raise ApiError(422, "'token' must be a string", field="token")
    token_hash = given_hash or (hash_token(token) if token else None)
    if not token_hash:
        raise ApiError(422, "'token' or 'token_sha256' is required", field="token")
    svc = services(request)
    if not svc.tokens.revoke(token_hash):
        raise not_found("token")
    n = svc.hub.close_revoked(lambda h: svc.tokens.is_valid_hash(h, svc.clock.now()))
    await svc.extra["audit"](p, "token_revoked", token_hash[:12], {"sockets_closed": n})
    return web.json_response({"ok": True, "sockets_closed": n})


@routes.get("/api/v1/admin/routing")
async def get_routing(request: web.Request) -> web.Response:
    p = principal(request)
    if not p.is_admin():
        raise not_found("resource")
    return web.json_response(services(request).extra["routing_config"]())


@routes.put("/api/v1/admin/routing")
async def put_routing(request: web.Request) -> web.Response:
    """Change queues, skills, strategies, priority rules, scripts or dispositions at run time."""
    p = principal(request)
    if not p.is_admin():
        raise not_found("resource")
    body = await json_body(request)
    try:
        out = await services(request).extra["reconfigure"](body, p)
    except ControlError as exc:
        raise _control_error(exc) from None
    return web.json_response(out)
