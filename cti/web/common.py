"""Helpers every route module uses: services, the caller's principal, API errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from cti.calls import repo
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


class CallNotStoredYet(ApiError):
    """503: a call on the asker's screen whose row the store writers have not written yet."""

    def __init__(self) -> None:
        super().__init__(503, "the call is not stored yet (the store is behind): try again", retry_after_s=1)


T = TypeVar("T")


async def load_call_row(fetch: Callable[[], Awaitable[T | None]], *, on_screen: bool) -> T | None:
    """`fetch()` the call a request acts on. The pop reaches the browser before the store
    writers write the call: when the asker has the call's pop (`on_screen`), a missing row is
    on its way and is waited for (`repo.wait_for_row`); CallNotStoredYet if it never comes.
    Anyone else gets what is stored now (None: not found)."""
    row = await fetch()
    if row is None and on_screen:
        row = await repo.wait_for_row(fetch, repo.CALL_ROW_WAIT_S)
        if row is None:
            raise CallNotStoredYet()
    return row


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
