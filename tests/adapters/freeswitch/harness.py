"""Test harness: a FakeESL server, the real FreeSwitchAdapter connected to it over loopback
TCP, and a collector of its events (shared by the adapter, conformance and fault tests)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from cti.adapters.base import AdapterContext
from cti.adapters.freeswitch.adapter import FreeSwitchAdapter
from cti.config import ProviderSettings
from tests.adapters.asterisk.harness import Collector, eventually, wait_ready
from tests.adapters.freeswitch.fake_esl import Behaviour, FakeESL

__all__ = ["Collector", "eventually", "make_adapter", "running", "wait_ready"]

AGENT_ENDPOINTS = {"user/alice": "alice", "user/bob": "bob", "user/sam": "sam"}
QUEUE_NUMBERS = {"+33170000100": "support"}


def make_adapter(port: int, *, name: str = "fs", password: str = "ClueCon", **opts: Any) -> FreeSwitchAdapter:
    settings = ProviderSettings(name=name, type="freeswitch", host="127.0.0.1", port=port, password=password,
                                backoff_initial_s=0.05, backoff_max_s=0.3, recordings_dir="/recordings",
                                **opts)
    ctx = AdapterContext(tenant="acme", default_region="FR", agent_endpoints=AGENT_ENDPOINTS,
                         queue_numbers=QUEUE_NUMBERS)
    return FreeSwitchAdapter(settings, ctx)


def script_endpoints(fake: FakeESL) -> None:
    fake.endpoints.update({
        "user/alice": Behaviour("answer", 0.03), "user/bob": Behaviour("noanswer"),
        "user/sam": Behaviour("answer", 0.02),
    })


@contextlib.asynccontextmanager
async def running(**opts: Any) -> AsyncIterator[tuple[FakeESL, FreeSwitchAdapter, Collector]]:
    fake = FakeESL()
    await fake.start()
    script_endpoints(fake)
    adapter = make_adapter(fake.port, **opts)
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
