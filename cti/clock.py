"""Injectable time (DESIGN principle 9): simulations and tests run faster than real time."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ScaledClock:
    """Wall time sped up by `speed` from a start instant (speed=60: one minute per second)."""

    def __init__(self, speed: float = 1.0, start: datetime | None = None) -> None:
        import time

        self.speed = speed
        self._t0 = time.monotonic()
        self._start = start or datetime.now(UTC)

    def _elapsed(self) -> float:
        import time

        return (time.monotonic() - self._t0) * self.speed

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._elapsed())

    def monotonic(self) -> float:
        return self._elapsed()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


class ManualClock:
    """Virtual time, advanced explicitly: `await clock.advance(5)` wakes sleepers in order."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        self._t = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()

    def now(self) -> datetime:
        return self._now + timedelta(seconds=self._t)

    def monotonic(self) -> float:
        return self._t

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._t + max(0.0, seconds), next(self._counter), fut))
        await fut

    async def advance(self, seconds: float) -> None:
        target = self._t + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, fut = heapq.heappop(self._sleepers)
            self._t = max(self._t, when)
            if not fut.done():
                fut.set_result(None)
            # let woken tasks run (and schedule new sleeps) before going on
            for _ in range(5):
                await asyncio.sleep(0)
        self._t = target
