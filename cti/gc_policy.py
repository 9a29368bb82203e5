"""Keep CPython's full garbage collections off the event loop's hot path.

A gen-2 collection walks every tracked object. With 1,000 sockets and warm caches that took
20-170 ms, every few seconds, and every pop in flight waited for it (the screen pop's p99).
What survives a full collection is frozen (`gc.freeze()`: moved to a generation that
collections skip): once at start (modules, settings, metadata) and then after every
generation-1 or full collection CPython runs by itself, so each object is walked by one
full collection, not by all of them. A frozen object that later dies in a reference cycle is
not collected while frozen (asyncio makes many such cycles: tasks, futures, exceptions), so
every `full_every_s` everything is unfrozen and collected once: one long pause a minute
instead of one every few seconds, and cyclic garbage kept for a minute at most.

After that minute's collection the C allocator is asked to give its free pages back
(`malloc_trim`, glibc only). Without it a node's RSS crept up by ~4 MiB a minute under steady
load while its live Python heap (`cti_python_heap_blocks`) was flat: freed memory stayed
with the process, scattered between live blocks where the heap's top cannot shrink.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import sys
import time
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)

_older_collections = 0
SLOW_FULL_COLLECTION_MS = 50.0  # logged as a warning from this long: it held every pop and routing decision


def _count_older(phase: str, info: dict[str, Any]) -> None:
    # generation 1 too: its survivors would otherwise pile up in generation 1 and 2 and be
    # walked again by each later gen-1 collection (70 ms ones were seen with 1,000 sockets)
    global _older_collections
    if phase == "stop" and info.get("generation", 0) >= 1:
        _older_collections += 1


def tune_gc() -> None:
    """Freeze what exists now, and run young collections less often (gen 0 at 10,000
    allocations instead of 700). Thresholds someone already tuned are left alone."""
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()
    if gc.get_threshold()[0] == 700:  # CPython's default
        gc.set_threshold(10_000, 20, 20)
    if _count_older not in gc.callbacks:
        gc.callbacks.append(_count_older)


def _find_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim  # glibc; musl has none
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


_malloc_trim = _find_malloc_trim()


def release_free_memory() -> bool:
    """Hand the C allocator's free pages back to the OS; False where that is not available."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True


def full_collect() -> float:
    """Unfreeze, collect everything, freeze the survivors again, give free pages back; returns
    the pause in ms."""
    t0 = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    release_free_memory()
    return (time.perf_counter() - t0) * 1000


async def freeze_loop(check_s: float = 1.0, full_every_s: float = 60.0) -> None:
    """Run for the life of the process (a supervised task): freeze the survivors of each
    generation-1 or full collection CPython ran (freezing is cheap: the lists are spliced,
    nothing is walked)."""
    seen = _older_collections
    last_full = time.monotonic()
    while True:
        await asyncio.sleep(check_s)
        if time.monotonic() - last_full >= full_every_s:
            last_full = time.monotonic()
            pause_ms = full_collect()
            (log.warning if pause_ms >= SLOW_FULL_COLLECTION_MS else log.debug)(
                "gc_full_collection", pause_ms=round(pause_ms, 1), frozen=gc.get_freeze_count())
            seen = _older_collections
        elif _older_collections != seen:
            seen = _older_collections
            gc.freeze()
