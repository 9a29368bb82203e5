"""The memory and loop-stall diagnosis tools operators turn on for a misbehaving node."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from cti.diagnostics import ENV_DIR, SlowSteps, compare, install_snapshot_signal


async def test_slow_steps_names_the_task_that_held_the_loop() -> None:
    async def hog() -> None:
        await asyncio.sleep(0)
        time.sleep(0.02)  # noqa: ASYNC251 - the point: a step that blocks the loop
        await asyncio.sleep(0)

    async def polite() -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    steps = SlowSteps(threshold_ms=10).install()
    try:
        await asyncio.gather(asyncio.create_task(hog(), name="hog"), asyncio.create_task(polite(), name="polite"))
    finally:
        steps.uninstall()
    assert steps.steps > 5
    assert list(steps.count) == [next(k for k in steps.count if k.startswith("hog paused at hog:"))]
    assert "1 of them >= 10 ms" in steps.report()
    # uninstalled: nothing more is counted (the step running now still ends in the wrapper)
    await asyncio.sleep(0)
    before = steps.steps
    await asyncio.sleep(0)
    assert steps.steps == before


async def test_sigusr2_writes_snapshots_whose_comparison_shows_what_grew(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import tracemalloc

    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    loop = asyncio.get_running_loop()
    assert install_snapshot_signal(loop) == tmp_path
    kept: list[bytes] = []
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        await asyncio.sleep(0.2)
        kept.extend(bytes(1000) for _ in range(2000))  # ~2 MB that stays alive
        os.kill(os.getpid(), signal.SIGUSR2)
        await asyncio.sleep(0.2)
    finally:
        loop.remove_signal_handler(signal.SIGUSR2)
        tracemalloc.stop()
    snaps = sorted(tmp_path.glob("*.snap"))  # noqa: ASYNC240 - a test, two small files
    assert len(snaps) == 2
    report = compare(str(snaps[0]), str(snaps[1]), top=3)
    first = report.split(" KiB ")[1]  # the biggest growth, with its traceback (newest frame last)
    assert "kept.extend(bytes(1000)" in first.split("KiB")[0]
    assert float(report.split()[0]) > 1500  # KiB


def test_without_the_variable_nothing_is_traced(monkeypatch: pytest.MonkeyPatch) -> None:
    import tracemalloc

    monkeypatch.delenv(ENV_DIR, raising=False)
    assert install_snapshot_signal(asyncio.new_event_loop()) is None
    assert not tracemalloc.is_tracing()
