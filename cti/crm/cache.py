"""Cached, time-bounded CRM lookups: a slow or failing CRM never delays the pop.

`lookup_fast(e164)` answers from the cache when it can; otherwise it asks the
connector and waits at most `timeout` seconds. If the CRM has not answered by then
it returns `("pending", [], later)`, where `later` is a future that resolves to
`(status, matches)` when the answer comes, so the pop goes out at once and is
updated afterwards. Concurrent lookups of the same number share one request.
Matches are kept `ttl` seconds, "nobody has this number" `negative_ttl` seconds;
failures are not cached (the next call asks again).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

import structlog

from cti.model import Contact

log = structlog.get_logger(__name__)

OK, PENDING, FAILED = "ok", "pending", "failed"

Result = tuple[str, list[Contact]]


class CachedLookup:
    def __init__(
        self,
        connector: Any,
        clock: Any,
        ttl: float = 300.0,
        negative_ttl: float = 60.0,
        timeout: float = 0.5,
        *,
        max_entries: int = 50_000,
    ) -> None:
        self.connector = connector
        self.clock = clock
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.timeout = timeout
        self.max_entries = max_entries
        self._cache: OrderedDict[str, tuple[float, list[Contact]]] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[list[Contact]]] = {}
        self.hits = 0
        self.misses = 0

    @classmethod
    def from_settings(cls, connector: Any, clock: Any, crm_settings: Any) -> CachedLookup:
        return cls(
            connector,
            clock,
            crm_settings.cache_ttl_s,
            crm_settings.negative_ttl_s,
            crm_settings.lookup_timeout_s,
        )

    def cached(self, e164: str) -> list[Contact] | None:
        hit = self._cache.get(e164)
        if hit is None:
            return None
        expires, matches = hit
        if self.clock.monotonic() >= expires:
            del self._cache[e164]
            return None
        return matches

    def invalidate(self, e164: str | None = None) -> None:
        if e164 is None:
            self._cache.clear()
        else:
            self._cache.pop(e164, None)

    def _store(self, e164: str, matches: list[Contact]) -> None:
        ttl = self.ttl if matches else self.negative_ttl
        if ttl <= 0:
            return
        self._cache[e164] = (self.clock.monotonic() + ttl, matches)
        self._cache.move_to_end(e164)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    def _fetch(self, e164: str) -> asyncio.Task[list[Contact]]:
        task = self._inflight.get(e164)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._ask(e164), name=f"crm_lookup:{e164}")
            self._inflight[e164] = task
        return task

    async def _ask(self, e164: str) -> list[Contact]:
        try:
            matches = list(await self.connector.lookup(e164))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("crm_lookup_failed", number=e164, error=str(exc) or type(exc).__name__)
            raise
        finally:
            self._inflight.pop(e164, None)
        self._store(e164, matches)
        return matches

    async def lookup(self, e164: str) -> list[Contact]:
        """Plain cached lookup, no timeout (for callers that can wait, e.g. activity logging)."""
        hit = self.cached(e164)
        if hit is not None:
            return hit
        return await asyncio.shield(self._fetch(e164))

    async def lookup_fast(self, e164: str) -> tuple[str, list[Contact], asyncio.Future[Result] | None]:
        hit = self.cached(e164)
        if hit is not None:
            self.hits += 1
            return OK, hit, None
        self.misses += 1
        task = self._fetch(e164)
        done, _ = await asyncio.wait({task}, timeout=self.timeout)
        if done:
            return (*_result(task), None)
        log.info("crm_lookup_pending", number=e164, timeout_s=self.timeout)
        later: asyncio.Future[Result] = asyncio.get_running_loop().create_future()

        def _resolve(t: asyncio.Task[list[Contact]]) -> None:
            if not later.done():
                later.set_result(_result(t))

        task.add_done_callback(_resolve)
        return PENDING, [], later

    async def close(self) -> None:
        tasks = list(self._inflight.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _result(task: asyncio.Task[list[Contact]]) -> Result:
    if task.cancelled() or task.exception() is not None:
        return FAILED, []
    return OK, task.result()
