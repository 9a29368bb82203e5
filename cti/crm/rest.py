"""HTTP plumbing shared by the remote connectors: one request with the error policy
every CRM API needs.

- 401: refresh the token once and replay; a second 401 is `CrmAuthError`.
- 429 / 503: wait what `Retry-After` says (seconds or an HTTP date), else an
  exponential backoff; past `max_wait_s` give up with `CrmUnavailable` (the
  activity writer retries later; a lookup gives way to the pop's timeout).
- other 5xx, timeouts, connection errors: a few retries, then `CrmUnavailable`.
- other 4xx: `CrmError` with the CRM's own message (retrying cannot help).
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog

from cti.crm.base import CrmAuthError, CrmError, CrmUnavailable
from cti.crm.store import local_history

log = structlog.get_logger(__name__)

AuthHeaders = Callable[[bool], Awaitable[dict[str, str]]]  # (force_refresh) -> headers


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def error_message(body: Any) -> str:
    """The CRM's own words: Salesforce `[{"message", "errorCode"}]`, HubSpot `{"message"}`, ..."""
    if isinstance(body, list) and body and isinstance(body[0], dict):
        first = body[0]
        code = first.get("errorCode")
        return f"{code}: {first.get('message')}" if code else str(first.get("message"))
    if isinstance(body, dict):
        for key in ("message", "error_description", "error", "detail"):
            if body.get(key):
                return str(body[key])
    return str(body)[:300]


class RestClient:
    def __init__(
        self,
        name: str,
        auth: AuthHeaders | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 10.0,
        max_retries: int = 3,
        max_wait_s: float = 30.0,
        backoff_s: float = 0.5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.auth = auth
        self._session = session
        self._own_session = session is None
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_retries = max_retries
        self.max_wait_s = max_wait_s
        self.backoff_s = backoff_s
        self.sleep = sleep

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None and not self._session.closed:
            await self._session.close()

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        data: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        authenticated: bool = True,
        replay: bool = True,
    ) -> tuple[int, Any]:
        """(status, parsed body) of a 2xx answer; raises CrmError / CrmUnavailable / CrmAuthError.

        `replay=False` for a request that is not idempotent (creating a record): one whose answer
        was lost (timeout, dropped connection, 5xx) may have been carried out, so it is not sent
        again; only a refusal before any work (429, 503, 401 then a new token) is retried."""
        refreshed = False
        attempt = 0
        while True:
            hdrs = dict(headers or {})
            if authenticated and self.auth is not None:
                hdrs.update(await self.auth(False))
            try:
                async with self.session().request(
                    method, url, json=json, data=data, params=params, headers=hdrs, timeout=self.timeout
                ) as resp:
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
                    text = await resp.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt >= self.max_retries or not replay:
                    raise CrmUnavailable(f"{self.name}: {method} {_path(url)}: {type(exc).__name__} {exc}") from None
                attempt += 1
                await self.sleep(self.backoff_s * 2 ** (attempt - 1))
                continue
            body = _parse(text)
            if 200 <= status < 300:
                return status, body
            if status == 401 and authenticated and self.auth is not None and not refreshed:
                refreshed = True
                log.info("crm_token_refresh", crm=self.name)
                await self.auth(True)
                continue
            if status == 401:
                raise CrmAuthError(f"{self.name}: {method} {_path(url)}: 401 {error_message(body)}")
            if status in (429, 503) or status >= 500:
                wait = retry_after_s(retry_after)
                if wait is None:
                    wait = self.backoff_s * 2**attempt
                maybe_done = status not in (429, 503)
                if attempt >= self.max_retries or wait > self.max_wait_s or (maybe_done and not replay):
                    raise CrmUnavailable(
                        f"{self.name}: {method} {_path(url)}: {status} {error_message(body)}"
                        + (f" (retry after {wait:.0f} s)" if status == 429 else "")
                    )
                attempt += 1
                log.info("crm_backoff", crm=self.name, status=status, wait_s=round(wait, 3))
                await self.sleep(wait)
                continue
            raise CrmError(f"{self.name}: {method} {_path(url)}: {status} {error_message(body)}")


def _parse(text: str) -> Any:
    if not text:
        return None
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def _path(url: str) -> str:
    """URL without its query string (which may hold a phone number or a token)."""
    return url.split("?", 1)[0]


class TokenCache:
    """One access token, refreshed by `fetch` when missing or rejected (one refresh at a time)."""

    def __init__(self, fetch: Callable[[], Awaitable[str]], initial: str | None = None) -> None:
        self._fetch = fetch
        self._token = initial
        self._lock = asyncio.Lock()
        self.refreshes = 0

    async def headers(self, force: bool = False) -> dict[str, str]:
        stale = self._token
        if force or self._token is None:
            async with self._lock:
                # another request may have refreshed while we waited
                if self._token is None or (force and self._token == stale):
                    self._token = await self._fetch()
                    self.refreshes += 1
        return {"Authorization": f"Bearer {self._token}"}


class RemoteConnector:
    """What the remote connectors share: the pop's call history comes from our own store (the
    CRMs' activity searches are too slow and rate limited for a pop), and shutdown closes the
    HTTP client. Subclasses set `engine`, `tenant` and `http`."""

    engine: Any
    tenant: str
    http: RestClient

    async def history(self, key: str, limit: int = 5) -> list[dict[str, Any]]:
        if self.engine is None:
            return []
        rows, _ = await local_history(self.engine, key, limit, tenant=self.tenant)
        return rows

    async def close(self) -> None:
        await self.http.close()
