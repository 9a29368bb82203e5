"""Helpers every route module uses: services, the caller's principal, API errors."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cti.services import Services
from cti.web.auth import Principal

SERVICES: web.AppKey[Services] = web.AppKey("services", Services)


class ApiError(Exception):
    """Raised by handlers/services; the error middleware renders it as JSON.

    {"error": {"status": 422, "message": "...", "field": "to"}}
    """

    def __init__(self, status: int, message: str, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.extra = extra

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"status": self.status, "message": self.message}
        if self.field:
            err["field"] = self.field
        err.update(self.extra)
        return {"error": err}


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found")


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def principal(request: web.Request) -> Principal:
    """The authenticated caller (the auth middleware sets it; /api routes always have one)."""
    p = request.get("principal")
    if p is None:
        raise ApiError(401, "authentication required")
    return p


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except Exception:
        raise ApiError(400, "request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body
