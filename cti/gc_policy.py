"""Keep CPython's full garbage collections off the event loop's hot path.

A gen-2 collection walks every tracked object. With 1,000 sockets and warm caches that took
20-170 ms, every few seconds, and every pop in flight waited for it (the screen pop's p99).
What survives a full collection is frozen (`gc.freeze()`: moved to a generation that
collections skip): once at start (modules, settings, metadata) and then after every full
collection CPython runs by itself, so each object is walked by one full collection, not by all
of them. A frozen object that later dies in a reference cycle is not collected while frozen
(asyncio makes many such cycles: tasks, futures, exceptions), so every `full_every_s`
everything is unfrozen and collected once: one long pause a minute instead of one every few
seconds, and cyclic garbage kept for a minute at most.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import structlog

log = structlog.get_logger(__name__)

_full_collections = 0


def _count_full(phase: str, info: dict[str, Any]) -> None:
    global _full_collections
    if phase == "stop" and info.get("generation") == 2:
        _full_collections += 1


def tune_gc() -> None:
    """Freeze what exists now, and run young collections less often (gen 0 at 10,000
    allocations instead of 700). Thresholds someone already tuned are left alone."""
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()
    if gc.get_threshold()[0] == 700:  # CPython's default
        gc.set_threshold(10_000, 20, 20)
    if _count_full not in gc.callbacks:
        gc.callbacks.append(_count_full)


def full_collect() -> float:
    """Unfreeze, collect everything, freeze the survivors again; returns the pause in ms."""
    t0 = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return (time.perf_counter() - t0) * 1000


async def freeze_loop(check_s: float = 1.0, full_every_s: float = 60.0) -> None:
    """Run for the life of the process (a supervised task): freeze the survivors of each full
    collection CPython ran (freezing is cheap: the lists are spliced, nothing is walked)."""
    seen = _full_collections
    last_full = time.monotonic()
    while True:
        await asyncio.sleep(check_s)
        if time.monotonic() - last_full >= full_every_s:
            last_full = time.monotonic()
            pause_ms = full_collect()
            log.debug("gc_full_collection", pause_ms=round(pause_ms, 1), frozen=gc.get_freeze_count())
            seen = _full_collections
        elif _full_collections != seen:
            seen = _full_collections
            gc.freeze()
