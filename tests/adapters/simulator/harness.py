"""Drive the simulator on a ManualClock: build it, collect its events, advance time."""

from __future__ import annotations

import asyncio
from typing import Any

from cti.adapters.base import AdapterContext, Command, CommandResult, adapter_class
from cti.clock import ManualClock
from cti.config import ProviderSettings
from cti.model import CallEvent

QUEUE_NUMBERS = {"+33170000100": "support", "100": "support", "+33170000200": "sales",
                 "+33170000300": "billing"}
ENDPOINTS = {"sim/alice": "alice", "sim/bob": "bob", "sim/carol": "carol", "sim/sam": "sam"}

# quiet: no spontaneous traffic, no simulated humans; the test drives everything
QUIET: dict[str, Any] = {"seed": 7, "arrival_rate_per_min": 0, "outbound_per_agent_per_hour": 0,
                         "auto_answer": False, "auto_hangup": False}


class SimHarness:
    def __init__(self, **options: Any) -> None:
        self.clock = ManualClock()
        ctx = AdapterContext(tenant="acme", clock=self.clock, agent_endpoints=dict(ENDPOINTS),
                             queue_numbers=dict(QUEUE_NUMBERS))
        cls = adapter_class("simulator")
        self.sim = cls(ProviderSettings(name="sim", type="simulator", **options), ctx)
        self.events: list[CallEvent] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SimHarness:
        await self.sim.start()
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sim.stop()
        if self._task is not None:
            await asyncio.wait_for(self._task, 5)

    async def _collect(self) -> None:
        async for e in self.sim.events():
            self.events.append(e)

    async def settle(self) -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    async def run(self, command: Command) -> CommandResult:
        result = await self.sim.execute(command)
        await self.settle()
        return result

    async def advance(self, seconds: float, step: float = 1.0) -> None:
        """Advance virtual time in steps (timers scheduled on the way fire in order)."""
        await self.settle()  # timers started by inject_call register first
        left = seconds
        while left > 0:
            d = min(step, left)
            await self.clock.advance(d)
            left -= d
        await self.settle()

    def of(self, pcid: str) -> list[CallEvent]:
        return [e for e in self.events if e.provider_call_id == pcid]

    def kinds(self, pcid: str) -> list[str]:
        return [str(e.kind) for e in self.of(pcid)]
