"""`GET /api/v1/stats/{report}`: JSON or CSV (`?format=csv`). Formulas: docs/metrics.md.

Validation and scoping live in cti.stats.service (shared with `cti stats`):
a bad parameter is a 422 naming it; another team's agent, or a report a plain
agent may not see, is a 404.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from cti.stats.export import to_csv
from cti.stats.query import ParamError
from cti.stats.service import REPORTS, NotVisible, Viewer, csv_rows, run_report
from cti.web.common import ApiError, principal, services


def _now(svc: Any) -> datetime:
    clock = getattr(svc, "clock", None)
    if clock is not None and hasattr(clock, "now"):
        return clock.now()
    return datetime.now(UTC)


async def stats_report(request: web.Request) -> web.StreamResponse:
    kind = request.match_info["report"]
    p = principal(request)
    svc = services(request)
    if kind not in REPORTS:
        raise ApiError(404, f"report {kind} not found")
    params = dict(request.query)
    params.pop("token", None)
    try:
        meta, rows = await run_report(kind, params, svc.db.engine, svc.settings, _now(svc),
                                      Viewer.from_principal(p), getattr(svc, "router", None))
    except ParamError as exc:
        raise ApiError(422, exc.message, field=exc.field) from None
    except NotVisible as exc:
        raise ApiError(404, f"{exc.what} not found") from None
    if params.get("format") == "csv":
        stamp = meta["query"]["from"][:10] + "_" + meta["query"]["to"][:10]
        return web.Response(
            text=to_csv(csv_rows(kind, rows)), content_type="text/csv", charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="cti-{kind}-{stamp}.csv"'},
        )
    if kind == "live":
        return web.json_response(rows, dumps=_dumps)
    return web.json_response({**meta, "rows": rows}, dumps=_dumps)


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, default=str)


def routes() -> list[web.RouteDef]:
    return [web.get("/api/v1/stats/{report}", stats_report)]
