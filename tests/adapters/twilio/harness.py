"""A Twilio adapter wired to the fake Twilio: webhook server on loopback + event collector."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from cti.adapters.base import AdapterContext
from cti.adapters.twilio.adapter import TwilioAdapter
from cti.config import ProviderSettings
from cti.model import CallEvent, EventKind
from tests.adapters.twilio.fake_twilio import FakeTwilio
from tests.conformance.scenarios import AGENT, QUEUE, QUEUE_NUMBER, SUPERVISOR
from tests.faults.proxy import TcpProxy

PROVIDER = "tw1"


@dataclass
class TwilioEnv:
    fake: FakeTwilio
    adapter: TwilioAdapter
    public_url: str
    events: list[CallEvent] = field(default_factory=list)
    proxy: TcpProxy | None = None  # between the adapter and the fake REST API, when asked for

    def hook(self, kind: str) -> str:
        return f"{self.public_url}/webhooks/twilio/{PROVIDER}/{kind}"

    def of_call(self, provider_call_id: str) -> list[CallEvent]:
        return [e for e in self.events if e.provider_call_id == provider_call_id]

    async def wait_for(self, kind: EventKind, provider_call_id: str | None = None,
                       within: float = 3.0) -> CallEvent:
        async def poll() -> CallEvent:
            while True:
                for e in self.events:
                    if e.kind is kind and provider_call_id in (None, e.provider_call_id):
                        return e
                await asyncio.sleep(0.005)
        return await asyncio.wait_for(poll(), within)

    async def settle(self) -> None:
        """Let webhook-published events reach the collector."""
        for _ in range(5):
            await asyncio.sleep(0)
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def twilio_env(*, via_proxy: bool = False, **options: object) -> AsyncIterator[TwilioEnv]:
    fake = FakeTwilio()
    api_url = await fake.start()
    proxy = None
    if via_proxy:
        proxy = TcpProxy("127.0.0.1", int(api_url.rsplit(":", 1)[1]))
        api_url = f"http://127.0.0.1:{await proxy.start()}"
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    public_url = f"http://127.0.0.1:{port}"
    settings = ProviderSettings(name=PROVIDER, type="twilio", account_sid=fake.account_sid,
                                auth_token=fake.auth_token, api_url=api_url,
                                caller_id=QUEUE_NUMBER, **options)
    ctx = AdapterContext(tenant="t1", agent_endpoints={"client:alice": AGENT, "client:sam": SUPERVISOR},
                         queue_numbers={QUEUE_NUMBER: QUEUE}, public_url=public_url)
    adapter = TwilioAdapter(settings, ctx)
    runner = web.AppRunner(adapter.web_app())
    await runner.setup()
    await web.SockSite(runner, sock).start()
    fake.voice_url = f"{public_url}/webhooks/twilio/{PROVIDER}/voice"
    fake.status_url = f"{public_url}/webhooks/twilio/{PROVIDER}/status"
    await adapter.start()
    await asyncio.wait_for(adapter.synced.wait(), 5)
    env = TwilioEnv(fake=fake, adapter=adapter, public_url=public_url, proxy=proxy)

    async def collect() -> None:
        async for ev in adapter.events():
            env.events.append(ev)

    task = asyncio.create_task(collect())
    try:
        yield env
    finally:
        await adapter.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)
        await runner.cleanup()
        if proxy is not None:
            await proxy.close()
        await fake.close()
