"""The loop-lag watch measures a stalled loop and says so."""

from __future__ import annotations

import asyncio
import time

from structlog.testing import capture_logs

from cti.loop_lag import watch_loop_lag
from cti.metrics import Metrics


async def test_a_stalled_loop_is_measured_and_logged() -> None:
    metrics = Metrics()
    with capture_logs() as logs:
        task = asyncio.create_task(watch_loop_lag(metrics, every_s=0.02, warn_ms=100))
        await asyncio.sleep(0.05)  # a few quiet ticks
        time.sleep(0.25)  # noqa: ASYNC251 - the point: a step that holds the loop
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    stalls = [e for e in logs if e["event"] == "event_loop_stalled"]
    assert len(stalls) == 1 and 150 <= stalls[0]["late_ms"] <= 400, stalls
    text = metrics.render().decode()
    assert 'cti_event_loop_lag_seconds_bucket{le="0.1"}' in text
    count = next(float(line.split()[-1]) for line in text.splitlines()
                 if line.startswith("cti_event_loop_lag_seconds_count"))
    over = next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith('cti_event_loop_lag_seconds_bucket{le="0.1"}'))
    assert count >= 3 and count - over == 1  # one tick late by more than 100 ms, the others on time
