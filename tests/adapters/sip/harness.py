"""A SIP line adapter registered on a real Kamailio, with an event collector."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from cti.adapters.base import AdapterContext
from cti.adapters.sip.adapter import SipAdapter
from cti.config import ProviderSettings
from cti.model import CallEvent, EventKind
from tests.adapters.sip.peers import Kamailio, free_udp_port, free_udp_range
from tests.conformance.scenarios import AGENT, CUSTOMER, QUEUE, QUEUE_NUMBER

PROVIDER = "line1"
LINE = "1001"


@dataclass
class SipEnv:
    adapter: SipAdapter
    kam: Kamailio
    tmp_path: Path
    events: list[CallEvent] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.kam.port}"

    def of_call(self, sid: str) -> list[CallEvent]:
        return [e for e in self.events if e.provider_call_id == sid]

    async def wait_for(self, kind: EventKind, sid: str | None = None, within: float = 8.0) -> CallEvent:
        async def poll() -> CallEvent:
            while True:
                for e in self.events:
                    if e.kind is kind and sid in (None, e.provider_call_id):
                        return e
                await asyncio.sleep(0.01)
        return await asyncio.wait_for(poll(), within)

    async def wait_ready(self, value: bool = True, within: float = 10.0) -> None:
        async def poll() -> None:
            while self.adapter.ready is not value:  # noqa: ASYNC110 - pyVoIP's threads set it
                await asyncio.sleep(0.02)
        await asyncio.wait_for(poll(), within)

    def customer_keys(self) -> dict[str, str]:
        return {"from_number": CUSTOMER, "to_number": QUEUE_NUMBER}


@contextlib.asynccontextmanager
async def sip_env(kam: Kamailio, tmp_path: Path, **options: object) -> AsyncIterator[SipEnv]:
    low, high = free_udp_range(8)
    opts: dict[str, object] = {
        "registrar": "127.0.0.1", "port": kam.port, "username": LINE, "password": "",
        "rtp_ports": [low, high], "agent": AGENT, "sip_port": free_udp_port(),
        "register_interval": 60, "register_timeout": 1, "start_timeout": 5, "stop_timeout": 3,
    }
    opts.update(options)
    settings = ProviderSettings(name=PROVIDER, type="sip", **opts)
    ctx = AdapterContext(tenant="t1", queue_numbers={QUEUE_NUMBER: QUEUE}, storage_dir=str(tmp_path / "rec"))
    adapter = SipAdapter(settings, ctx)
    env = SipEnv(adapter=adapter, kam=kam, tmp_path=tmp_path)
    await adapter.start()

    async def collect() -> None:
        async for ev in adapter.events():
            env.events.append(ev)

    task = asyncio.create_task(collect())
    try:
        await env.wait_ready()
        yield env
    finally:
        await adapter.stop()  # before Kamailio goes (pyVoIP's de-REGISTER needs it)
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 3)
