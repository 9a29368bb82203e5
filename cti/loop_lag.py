"""How late the event loop runs its timers: the one figure that tells a busy node from a stalled one.

Everything real-time on a node (pops, routing, socket writes) shares one event loop, so a
step that holds it (a long garbage collection, a burst of work) delays all of them at
once. A timer due every `every_s` measures it: the delay goes to the
`cti_event_loop_lag_seconds` histogram, and a delay over `warn_ms` is logged as
`event_loop_stalled`, with the time it happened, to match against what else the logs say.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)


async def watch_loop_lag(
    metrics: Any = None, *, every_s: float = 0.1, warn_ms: float = 100.0,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Run for the life of the process (a supervised task)."""
    while True:
        start = monotonic()
        await asyncio.sleep(every_s)
        late = max(0.0, monotonic() - start - every_s)
        if metrics is not None:
            metrics.loop_lag.observe(late)
        if late * 1000 >= warn_ms:
            log.warning("event_loop_stalled", late_ms=round(late * 1000, 1))
