"""Test harness: a FakeARI server, the real AsteriskAdapter connected to it over loopback,
and a collector of the adapter's events (shared by the adapter, conformance and fault tests)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from cti.adapters.asterisk.adapter import AsteriskAdapter
from cti.adapters.base import AdapterContext
from cti.config import ProviderSettings
from cti.model import CallEvent, EventKind
from tests.adapters.asterisk.fake_ari import Behaviour, FakeARI

AGENT_ENDPOINTS = {"PJSIP/alice": "alice", "PJSIP/bob": "bob", "PJSIP/sam": "sam"}
QUEUE_NUMBERS = {"+33170000100": "support"}


class Collector:
    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter
        self.events: list[CallEvent] = []
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for e in self.adapter.events():
            async with self._changed:
                self.events.append(e)
                self._changed.notify_all()

    async def wait(self, pred: Callable[[CallEvent], bool], within: float = 5.0, count: int = 1) -> CallEvent:
        async def until() -> CallEvent:
            async with self._changed:
                while True:
                    hits = [e for e in self.events if pred(e)]
                    if len(hits) >= count:
                        return hits[count - 1]
                    await self._changed.wait()
        return await asyncio.wait_for(until(), within)

    async def kind(self, kind: EventKind, call_id: str | None = None, within: float = 5.0) -> CallEvent:
        return await self.wait(lambda e: e.kind is kind and (call_id is None or e.call_id == call_id), within)

    def of(self, call_id: str) -> list[CallEvent]:
        return [e for e in self.events if e.call_id == call_id]

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def make_adapter(url: str, *, name: str = "pbx", storage_dir: str = "/tmp/cti-rec", **opts: Any) -> AsteriskAdapter:
    settings = ProviderSettings(name=name, type="asterisk", url=url, username="cti", password="secret",
                                app="cti", backoff_initial_s=0.05, backoff_max_s=0.3, **opts)
    ctx = AdapterContext(tenant="acme", default_region="FR", agent_endpoints=AGENT_ENDPOINTS,
                         queue_numbers=QUEUE_NUMBERS, storage_dir=storage_dir)
    return AsteriskAdapter(settings, ctx)


async def wait_ready(adapter: Any, within: float = 5.0) -> None:
    async def until() -> None:
        while not adapter.ready:  # noqa: ASYNC110 - polling a plain property
            await asyncio.sleep(0.01)
    await asyncio.wait_for(until(), within)


@contextlib.asynccontextmanager
async def running(url_of: Callable[[FakeARI], str] | None = None, storage_dir: str = "/tmp/cti-rec",
                  ) -> AsyncIterator[tuple[FakeARI, AsteriskAdapter, Collector]]:
    fake = FakeARI()
    await fake.start()
    fake.endpoints.update({
        "PJSIP/alice": Behaviour("answer", 0.03), "PJSIP/bob": Behaviour("noanswer"),
        "PJSIP/sam": Behaviour("answer", 0.02),
    })
    adapter = make_adapter(url_of(fake) if url_of else fake.url, storage_dir=storage_dir)
    await adapter.start()
    col = Collector(adapter)
    try:
        await wait_ready(adapter)
        await asyncio.wait_for(fake.connected.wait(), 5)
        yield fake, adapter, col
    finally:
        await adapter.stop()
        await col.close()
        await fake.close()


async def eventually(pred: Callable[[], bool], within: float = 2.0) -> bool:
    """Poll `pred` until true (for side effects the adapter does after emitting an event)."""
    async def until() -> None:
        while not pred():  # noqa: ASYNC110 - polling arbitrary state
            await asyncio.sleep(0.01)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(until(), within)
    return pred()
