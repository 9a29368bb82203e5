"""Opt-in memory diagnosis for a running node.

With `CTI_TRACEMALLOC_DIR` set, `cti serve` traces allocations (tracemalloc, slow: for
diagnosis only) and writes a snapshot into that directory on each SIGUSR2. Two snapshots
taken minutes apart under steady load show what keeps growing:

    python -m cti.diagnostics DIR/1234-1.snap DIR/1234-3.snap

`SlowSteps` times every event-loop step and counts the long ones by task and by the line
where the task stopped: what holds the loop while a pop waits to be sent.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import signal
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

ENV_DIR = "CTI_TRACEMALLOC_DIR"
ENV_FRAMES = "CTI_TRACEMALLOC_FRAMES"  # deeper is clearer and slower (12 frames: ~10x the CPU)


def install_snapshot_signal(loop: asyncio.AbstractEventLoop) -> Path | None:
    """Start tracing and dump a snapshot on SIGUSR2 when `CTI_TRACEMALLOC_DIR` is set."""
    target = os.environ.get(ENV_DIR)
    if not target:
        return None
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(int(os.environ.get(ENV_FRAMES) or 4))
    counter = itertools.count(1)

    def dump() -> None:
        tracemalloc.take_snapshot().dump(str(out / f"{os.getpid()}-{next(counter)}.snap"))

    loop.add_signal_handler(signal.SIGUSR2, dump)
    return out


class SlowSteps:
    """Counts loop steps longer than `threshold_ms`, keyed by task name and where it paused.

    Wraps `asyncio.Handle._run` for the whole process while installed (diagnosis only: it
    adds about a microsecond to every step).
    """

    def __init__(self, threshold_ms: float = 2.0) -> None:
        self.threshold_s = threshold_ms / 1000
        self.count: Counter[str] = Counter()
        self.total_s: Counter[str] = Counter()
        self.steps = 0
        self._orig: Any = None
        self._gc_t0 = 0.0
        self._since = time.perf_counter()
        # the collections >= threshold: (s since reset, generation, ms, unreachable objects freed)
        self.gc_log: list[tuple[float, int, float, int]] = []

    def reset(self) -> None:
        """Forget what was counted so far (e.g. start-up, before a measurement)."""
        self.steps = 0
        self._since = time.perf_counter()
        self.gc_log.clear()
        self.count.clear()
        self.total_s.clear()

    def install(self) -> SlowSteps:
        orig = self._orig = asyncio.events.Handle._run
        timer = self

        def _run(handle: asyncio.events.Handle) -> None:
            t0 = time.perf_counter()
            orig(handle)
            dt = time.perf_counter() - t0
            timer.steps += 1
            if dt >= timer.threshold_s:
                key = timer.describe(handle)
                timer.count[key] += 1
                timer.total_s[key] += dt

        asyncio.events.Handle._run = _run  # type: ignore[method-assign]
        gc.callbacks.append(self._on_gc)
        return self

    def uninstall(self) -> None:
        if self._orig is not None:
            asyncio.events.Handle._run = self._orig  # type: ignore[method-assign]
            self._orig = None
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # a collection runs inside whichever step allocated last: count it apart, or the step
        # that happened to trigger it takes the blame
        if phase == "start":
            self._gc_t0 = time.perf_counter()
            return
        dt = time.perf_counter() - self._gc_t0
        if dt >= self.threshold_s:
            self.gc_log.append((self._gc_t0 - self._since, int(info.get("generation", -1)), dt * 1000,
                                int(info.get("collected", 0))))

    @staticmethod
    def describe(handle: asyncio.events.Handle) -> str:
        cb = getattr(handle, "_callback", None)
        task = getattr(cb, "__self__", None)
        if isinstance(task, asyncio.Task):
            frames = task.get_stack()
            where = " < ".join(f"{fr.f_code.co_name}:{fr.f_lineno}" for fr in reversed(frames[-3:]))
            return f"{task.get_name()} paused at {where or 'end'}"
        return repr(cb)[:120]

    def report(self, top: int = 12) -> str:
        lines = [f"{self.steps} loop steps, {sum(self.count.values())} of them >= {self.threshold_s * 1000:g} ms"]
        for key, n in self.count.most_common(top):
            lines.append(f"  {n:6d} x, {self.total_s[key] / n * 1000:6.1f} ms avg  {key}")
        for gen in sorted({g for _t, g, _ms, _freed in self.gc_log}):
            mine = [(ms, freed) for _t, g, ms, freed in self.gc_log if g == gen]
            lines.append(f"  of which garbage collections of generation {gen}: {len(mine)} x, "
                         f"{sum(ms for ms, _ in mine) / len(mine):.1f} ms avg, "
                         f"{sum(freed for _, freed in mine) // len(mine)} objects freed avg")
        if self.gc_log:
            lines.append("  when (s, generation, ms/freed): " + ", ".join(
                f"{t:.1f}s gen{g} {ms:.0f}ms/{freed}" for t, g, ms, freed in self.gc_log[:30]))
        return "\n".join(lines)


async def garbage_census(seconds: float) -> Counter[str]:
    """What the cycle collector would free over `seconds`, by type: the objects that die in
    reference cycles (each one costs a collection's time, not a refcount drop)."""
    gc.collect()
    saved = len(gc.garbage)
    gc.set_debug(gc.get_debug() | gc.DEBUG_SAVEALL)
    try:
        await asyncio.sleep(seconds)
        gc.collect()
    finally:
        gc.set_debug(gc.get_debug() & ~gc.DEBUG_SAVEALL)
    found = gc.garbage[saved:]
    del gc.garbage[saved:]
    return Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in found)


def compare(before: str, after: str, top: int = 15) -> str:
    """The tracebacks whose live memory grew most between two snapshots."""
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    old = tracemalloc.Snapshot.load(before).filter_traces(filters)
    new = tracemalloc.Snapshot.load(after).filter_traces(filters)
    lines = []
    for stat in new.compare_to(old, "traceback")[:top]:
        lines.append(f"{stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+8d} blocks")
        lines.extend(f"        {ln}" for ln in stat.traceback.format())
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description="what grew between two tracemalloc snapshots")
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--top", type=int, default=15)
    a = ap.parse_args()
    print(compare(a.before, a.after, a.top))


if __name__ == "__main__":
    main()
