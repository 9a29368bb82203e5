"""Adapter -> bus: events that arrive while a publish is on its way go out together, in order,
and a bus that fails holds them until it takes them."""

from __future__ import annotations

import asyncio
import datetime as dt
import types
from collections.abc import AsyncIterator
from typing import Any

from cti.app import CtiApp
from cti.bus import streams as S
from cti.bus.memory import MemoryBus
from cti.metrics import Metrics
from cti.model import CallEvent, Direction, EventKind


def _event(i: int) -> CallEvent:
    return CallEvent(event_id=f"e{i}", provider="sim", provider_call_id=f"p{i}", call_id=f"c{i}",
                     kind=EventKind.CREATED, occurred_at=dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC),
                     direction=Direction.INBOUND, from_number="+33612345678")


class _Adapter:
    def __init__(self, n: int) -> None:
        self.n = n

    async def events(self) -> AsyncIterator[CallEvent]:
        for i in range(self.n):
            yield _event(i)


class _SlowFlakyBus(MemoryBus):
    """Each publish takes a while; the first `fail` publishes fail."""

    def __init__(self, fail: int = 0) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.fail = fail

    async def publish_many(self, stream: str, items: list[dict[str, Any]]) -> list[str]:
        await asyncio.sleep(0.01)
        if self.fail:
            self.fail -= 1
            raise ConnectionError("bus down")
        self.calls.append(len(items))
        return await super().publish_many(stream, items)


def _pump_host(bus: MemoryBus) -> Any:
    host = types.SimpleNamespace(metrics=Metrics(), bus=bus)
    host._publish_held = lambda name, batch: CtiApp._publish_held(host, name, batch)
    return host


async def test_events_waiting_for_the_bus_go_out_together_in_order() -> None:
    bus = _SlowFlakyBus()
    await CtiApp._pump(_pump_host(bus), "sim", _Adapter(500))
    ids = [m.data["event_id"] for m in (await _read_all(bus))]
    assert ids == [f"e{i}" for i in range(500)]
    assert sum(bus.calls) == 500 and len(bus.calls) < 50, bus.calls  # one round trip per event before


async def test_a_failing_bus_holds_the_events_until_it_takes_them() -> None:
    bus = _SlowFlakyBus(fail=2)
    await CtiApp._pump(_pump_host(bus), "sim", _Adapter(30))
    assert [m.data["event_id"] for m in (await _read_all(bus))] == [f"e{i}" for i in range(30)]


async def _read_all(bus: MemoryBus) -> list[Any]:
    got: list[Any] = []

    async def handler(batch: list[Any]) -> None:
        got.extend(batch)

    task = asyncio.create_task(bus.consume(S.EVENTS, "t", "t", handler))
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return got


async def test_a_stopped_pump_leaves_nothing_pending_and_sends_what_it_held() -> None:
    class _Trickle(_Adapter):
        async def events(self) -> AsyncIterator[CallEvent]:
            for i in range(self.n):
                yield _event(i)
            await asyncio.Event().wait()  # a provider connection that stays open

    bus = _SlowFlakyBus()
    pump = asyncio.create_task(CtiApp._pump(_pump_host(bus), "sim", _Trickle(20)))
    await asyncio.sleep(0.2)
    pump.cancel()
    await asyncio.gather(pump, return_exceptions=True)
    assert [m.data["event_id"] for m in (await _read_all(bus))] == [f"e{i}" for i in range(20)]
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert leftover == [], leftover
