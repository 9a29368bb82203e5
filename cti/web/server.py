"""aiohttp application factory: middlewares (errors, CORS, auth), routes, pages."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from cti.calls.control import RateLimiter
from cti.store.db import is_transient
from cti.web import api
from cti.web.common import SERVICES, ApiError
from cti.web.ws import origin_allowed

log = structlog.get_logger(__name__)

STATIC_DIR = Path(str(importlib.resources.files("cti.web") / "static"))
PAGES = {"/agent": "agent.html", "/dashboard": "dashboard.html", "/softphone": "softphone.html"}


def _cors_headers(request: web.Request) -> dict[str, str]:
    origin = request.headers.get("Origin")
    svc = request.app[SERVICES]
    if origin and origin_allowed(origin, svc.settings.server.allowed_origins, None):
        return {
            "Access-Control-Allow-Origin": origin,
            "Vary": "Origin",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
            "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
            "Access-Control-Max-Age": "600",
        }
    return {}


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        resp = await handler(request)
    except ApiError as exc:
        resp = web.json_response(exc.body(), status=exc.status)
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        resp = web.json_response({"error": {"status": exc.status, "message": exc.reason}}, status=exc.status,
                                 headers={k: v for k, v in exc.headers.items() if k == "Allow"})
    except Exception as exc:
        if is_transient(exc):  # the store is restarting or unreachable: say so, and when to retry
            log.warning("request_store_unavailable", path=request.path, method=request.method, error=repr(exc)[:200])
            resp = web.json_response({"error": {"status": 503, "message": "store unavailable, retry shortly"}},
                                     status=503, headers={"Retry-After": "1"})
        else:
            log.exception("request_failed", path=request.path, method=request.method)
            resp = web.json_response({"error": {"status": 500, "message": "internal error"}}, status=500)
    if request.path.startswith("/api/") and not resp.prepared:
        resp.headers.update(_cors_headers(request))
    return resp


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if not request.path.startswith("/api/"):
        return await handler(request)
    if request.method == "OPTIONS":  # CORS preflight: no token by design
        return web.Response(status=204, headers=_cors_headers(request))
    svc = request.app[SERVICES]
    limiter: RateLimiter = svc.extra["failed_auth_limit"]
    client = request.remote or "?"
    blocked = limiter.blocked_for(client)
    if blocked:
        return web.json_response(
            {"error": {"status": 429, "message": "too many failed authentications"}},
            status=429, headers={"Retry-After": str(int(blocked) + 1)},
        )
    from cti.web.auth import bearer_token

    p = svc.tokens.lookup(bearer_token(request.headers, {}), svc.clock.now())
    if p is None:
        limiter.hit(client)
        return web.json_response({"error": {"status": 401, "message": "missing, invalid or expired token"}},
                                 status=401, headers={"WWW-Authenticate": "Bearer"})
    request["principal"] = p
    structlog.contextvars.bind_contextvars(user=p.user)
    try:
        return await handler(request)
    finally:
        structlog.contextvars.unbind_contextvars("user")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    checks = await svc.extra["readiness"]()
    ok = all(checks.values())
    return web.json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    await svc.extra["refresh_metrics"]()
    return web.Response(body=svc.metrics.render(), content_type="text/plain", charset="utf-8")


async def websocket(request: web.Request) -> web.StreamResponse:
    svc = request.app[SERVICES]
    origin = request.headers.get("Origin")
    if not origin_allowed(origin, svc.settings.server.allowed_origins, request.host):
        log.warning("ws_origin_refused", origin=origin)
        return web.json_response({"error": {"status": 403, "message": f"origin {origin} is not allowed"}},
                                 status=403)
    from cti.web.auth import bearer_token

    p = svc.tokens.lookup(bearer_token(request.headers, request.query), svc.clock.now())
    if p is None:
        svc.extra["failed_auth_limit"].hit(request.remote or "?")
        return web.json_response({"error": {"status": 401, "message": "missing, invalid or expired token"}},
                                 status=401)
    return await svc.hub.serve(request, p, svc.extra["snapshot"])


def _page(name: str):
    async def handler(request: web.Request) -> web.StreamResponse:
        path = STATIC_DIR / name
        if not path.exists():
            raise web.HTTPNotFound(text=f"{name} is not built")
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    return handler


async def index(request: web.Request) -> web.Response:
    raise web.HTTPFound("/agent")


async def openapi(request: web.Request) -> web.Response:
    from cti.web.openapi import spec

    svc = request.app[SERVICES]
    return web.json_response(spec(svc.settings.server.public_url))


def build_web_app(svc: Any, extra_routes: list[Any] | None = None) -> web.Application:
    app = web.Application(middlewares=[error_middleware, auth_middleware], client_max_size=1024**2)
    app[SERVICES] = svc
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/openapi.json", openapi)
    for route, file in PAGES.items():
        app.router.add_get(route, _page(file))
    try:
        from cti.web import stats_api

        app.router.add_routes(stats_api.routes())
    except ImportError as exc:  # stats module not installed in this build
        log.warning("stats_api_unavailable", error=str(exc))
    from cti.crm import web as crm_web

    app.router.add_routes(crm_web.routes)
    app.router.add_routes(api.routes)
    for r in extra_routes or []:
        app.router.add_routes(r)
    app.router.add_static("/static/", STATIC_DIR, show_index=False, append_version=False)
    return app
