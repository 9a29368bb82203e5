"""Event-socket faults: the link to FreeSWITCH is cut (or goes silent) in the middle of calls.

A TCP proxy sits between the adapter and the fake event socket. While the link is down the
fake keeps going and its events are lost (FreeSWITCH keeps nothing for a closed socket);
after the reconnect the adapter resyncs from `show channels as json` / `show calls as json`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from cti.adapters.base import AdapterError, Connect, Hold
from cti.metrics import Metrics
from cti.model import EventKind
from tests.adapters.freeswitch.fake_esl import Behaviour, FakeESL
from tests.adapters.freeswitch.harness import Collector, eventually, make_adapter, script_endpoints, wait_ready
from tests.conformance.scenarios import normalize
from tests.faults.proxy import TcpProxy

pytestmark = pytest.mark.timeout(30)


@contextlib.asynccontextmanager
async def through_proxy(**opts: object) -> AsyncIterator[tuple[FakeESL, TcpProxy, object, Collector]]:
    fake = FakeESL()
    await fake.start()
    script_endpoints(fake)
    fake.endpoints["user/bob"] = Behaviour("answer", 0.02)
    proxy = TcpProxy("127.0.0.1", fake.port)
    port = await proxy.start()
    adapter = make_adapter(port, **opts)
    adapter.metrics = Metrics()
    await adapter.start()
    col = Collector(adapter)
    try:
        await wait_ready(adapter)
        yield fake, proxy, adapter, col
    finally:
        await adapter.stop()
        await col.close()
        await proxy.close()
        await fake.close()


async def _answered_call(fake: FakeESL, adapter, col: Collector, agent: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    u = fake.incoming("0612345678", "0170000100")
    queued = await col.wait(lambda e: e.kind is EventKind.QUEUED and e.provider_call_id == u)
    await adapter.execute(Connect(u, ((agent, f"user/{agent}"),)))
    await col.kind(EventKind.ANSWERED, queued.call_id)
    return u, queued.call_id


async def test_cut_mid_calls_resyncs_without_losing_or_doubling_calls() -> None:
    async with through_proxy() as (fake, proxy, adapter, col):
        u_a, call_a = await _answered_call(fake, adapter, col, "alice")
        u_b = fake.incoming("0698765432", "0170000100")
        call_b = (await col.wait(lambda e: e.provider_call_id == u_b and e.kind is EventKind.QUEUED)).call_id

        proxy.refuse(True)
        proxy.cut()
        assert await eventually(lambda: not adapter.ready), "ready must be false while disconnected"
        with pytest.raises(AdapterError):
            await adapter.execute(Hold(u_a))
        fake.hangup(u_a)                                   # lost: A's caller hangs up
        u_c = fake.incoming("0611111111", "0170000100")    # lost: a new call arrives
        await asyncio.sleep(0.2)
        proxy.refuse(False)

        await wait_ready(adapter)
        assert (await col.kind(EventKind.ENDED, call_a)).data["cause"] == "normal"
        queued_c = await col.wait(lambda e: e.provider_call_id == u_c and e.kind is EventKind.QUEUED)
        assert adapter.connections == 2
        assert adapter.metrics.adapter_reconnects.labels("fs")._value.get() >= 1
        assert await eventually(lambda: set(fake.channels) == {u_b, u_c}), "A's agent leg is hung up"

        ids = Counter(e.event_id for e in col.events)
        assert max(ids.values()) == 1
        created = Counter(e.call_id for e in col.events if e.kind is EventKind.CREATED)
        assert created == {call_a: 1, call_b: 1, queued_c.call_id: 1}
        assert normalize(col.of(call_a)) == [("created", "inbound"), ("queued", "support"), ("ringing", "alice"),
                                             ("answered", "alice"), ("ended", "normal")]

        await adapter.execute(Connect(u_b, (("bob", "user/bob"),)))
        await col.kind(EventKind.ANSWERED, call_b)
        fake.hangup(u_b)
        fake.hangup(u_c)
        await col.kind(EventKind.ENDED, call_b)
        await col.kind(EventKind.ENDED, queued_c.call_id)


async def test_call_answered_during_the_gap_is_bridged_after_resync() -> None:
    async with through_proxy() as (fake, proxy, adapter, col):
        u = fake.incoming("0612345678", "0170000100")
        queued = await col.kind(EventKind.QUEUED)
        fake.endpoints["user/alice"] = Behaviour("manual")
        await adapter.execute(Connect(u, (("alice", "user/alice"),)))
        await col.kind(EventKind.RINGING, queued.call_id)
        leg = next(c for c in fake.channels if c.startswith("cti-a-"))
        proxy.refuse(True)
        proxy.cut()
        assert await eventually(lambda: not adapter.ready)
        fake.answer(leg)  # CHANNEL_ANSWER and BACKGROUND_JOB are lost
        proxy.refuse(False)
        await wait_ready(adapter)
        answered = await col.kind(EventKind.ANSWERED, queued.call_id)
        assert answered.agent == "alice"
        assert fake.channels[u].bridged == leg


async def test_silent_link_is_detected_by_keepalive_and_reconnected() -> None:
    async with through_proxy(keepalive_s=0.2, keepalive_timeout_s=0.3) as (fake, proxy, adapter, col):
        proxy.blackhole(True)
        assert await eventually(lambda: not adapter.ready, within=5)
        proxy.blackhole(False)
        await wait_ready(adapter)
        u = fake.incoming("0612345678", "0170000100")
        await col.wait(lambda e: e.provider_call_id == u and e.kind is EventKind.QUEUED)


async def test_slow_link_still_delivers_every_event_in_order() -> None:
    async with through_proxy() as (fake, proxy, adapter, col):
        proxy.slow(0.05)
        u, call_id = await _answered_call(fake, adapter, col, "alice")
        fake.hangup(u)
        await col.kind(EventKind.ENDED, call_id)
        assert [s[0] for s in normalize(col.of(call_id))] == ["created", "queued", "ringing", "answered", "ended"]


async def test_restarted_adapter_adopts_connected_calls_with_the_same_event_ids() -> None:
    """A new process (empty memory) finds an answered call: it is answered, not abandoned."""
    async with through_proxy() as (fake, proxy, adapter, col):
        u, call_id = await _answered_call(fake, adapter, col, "alice")
        before = {e.kind: e.event_id for e in col.of(call_id)}
        await adapter.stop()
        fresh = make_adapter(proxy.port)
        await fresh.start()
        col2 = Collector(fresh)
        try:
            await wait_ready(fresh)
            answered = await col2.kind(EventKind.ANSWERED, call_id)
            assert answered.agent == "alice" and answered.event_id == before[EventKind.ANSWERED]
            assert col2.of(call_id)[0].event_id == before[EventKind.CREATED]
            fake.hangup(u)
            assert (await col2.kind(EventKind.ENDED, call_id)).data["cause"] == "normal"
            assert await eventually(lambda: not fake.channels)
        finally:
            await fresh.stop()
            await col2.close()
