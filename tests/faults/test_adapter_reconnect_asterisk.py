"""ARI connection faults: the link to Asterisk is cut (or goes silent) in the middle of calls.

A TCP proxy sits between the adapter and the fake ARI server (REST and WebSocket both go
through it). While the link is down the fake keeps going and its events are lost, like
Asterisk's; after the reconnect the adapter resyncs from `GET /channels` + `GET /bridges`.
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
from tests.adapters.asterisk.fake_ari import Behaviour, FakeARI
from tests.adapters.asterisk.harness import Collector, eventually, make_adapter, wait_ready
from tests.conformance.scenarios import normalize
from tests.faults.proxy import TcpProxy

pytestmark = pytest.mark.timeout(30)


@contextlib.asynccontextmanager
async def through_proxy(**opts: object) -> AsyncIterator[tuple[FakeARI, TcpProxy, object, Collector]]:
    fake = FakeARI()
    await fake.start()
    fake.endpoints.update({"PJSIP/alice": Behaviour("answer", 0.02), "PJSIP/bob": Behaviour("answer", 0.02)})
    proxy = TcpProxy("127.0.0.1", fake.port)
    port = await proxy.start()
    adapter = make_adapter(f"http://127.0.0.1:{port}", **opts)
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


async def _answered_call(fake: FakeARI, adapter, col: Collector, agent: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    ch = fake.incoming("0612345678", "0170000100")
    queued = await col.wait(lambda e: e.kind is EventKind.QUEUED and e.provider_call_id == ch)
    await adapter.execute(Connect(ch, ((agent, f"PJSIP/{agent}"),)))
    await col.kind(EventKind.ANSWERED, queued.call_id)
    return ch, queued.call_id


async def test_cut_mid_calls_resyncs_without_losing_or_doubling_calls() -> None:
    async with through_proxy() as (fake, proxy, adapter, col):
        ch_a, call_a = await _answered_call(fake, adapter, col, "alice")
        ch_b = fake.incoming("0698765432", "0170000100")
        call_b = (await col.wait(lambda e: e.provider_call_id == ch_b and e.kind is EventKind.QUEUED)).call_id

        proxy.refuse(True)
        proxy.cut()
        assert await eventually(lambda: not adapter.ready), "ready must be false while disconnected"
        with pytest.raises(AdapterError):
            await adapter.execute(Hold(ch_a))
        # while we are away: A's caller hangs up, a new call C arrives (both events are lost)
        fake.hangup(ch_a)
        ch_c = fake.incoming("0611111111", "0170000100")
        await asyncio.sleep(0.2)
        proxy.refuse(False)

        await wait_ready(adapter)
        ended_a = await col.kind(EventKind.ENDED, call_a)
        assert ended_a.data["cause"] == "normal"
        created_c = await col.wait(lambda e: e.provider_call_id == ch_c and e.kind is EventKind.QUEUED)
        assert adapter.connections == 2 and proxy.connections_made >= 2
        assert adapter.metrics.adapter_reconnects.labels("pbx")._value.get() >= 1
        # the agent's leg of A was hung up by the resync (nothing left dangling)
        assert await eventually(lambda: set(fake.channels) == {ch_b, ch_c})

        # no call lost or doubled: one created per call, no event emitted twice
        ids = Counter(e.event_id for e in col.events)
        assert max(ids.values()) == 1
        created = Counter(e.call_id for e in col.events if e.kind is EventKind.CREATED)
        assert created == {call_a: 1, call_b: 1, created_c.call_id: 1}
        assert normalize(col.of(call_a)) == [("created", "inbound"), ("queued", "support"), ("ringing", "alice"),
                                             ("answered", "alice"), ("ended", "normal")]

        # B and C go on normally after the reconnect
        await adapter.execute(Connect(ch_b, (("bob", "PJSIP/bob"),)))
        await col.kind(EventKind.ANSWERED, call_b)
        fake.hangup(ch_b)
        fake.hangup(ch_c)
        await col.kind(EventKind.ENDED, call_b)
        await col.kind(EventKind.ENDED, created_c.call_id)


async def test_call_answered_during_the_gap_is_answered_after_resync() -> None:
    async with through_proxy() as (fake, proxy, adapter, col):
        ch = fake.incoming("0612345678", "0170000100")
        queued = await col.kind(EventKind.QUEUED)
        fake.endpoints["PJSIP/alice"] = Behaviour("manual")
        await adapter.execute(Connect(ch, (("alice", "PJSIP/alice"),)))
        await col.kind(EventKind.RINGING, queued.call_id)
        leg = next(c for c in fake.channels if c.startswith("cti-a-"))
        proxy.refuse(True)
        proxy.cut()
        assert await eventually(lambda: not adapter.ready)
        fake.answer(leg)  # the agent picks up while we are away: its StasisStart is lost
        proxy.refuse(False)
        await wait_ready(adapter)
        # the resync sees the agent's leg Up and bridges it with the caller
        answered = await col.kind(EventKind.ANSWERED, queued.call_id)
        assert answered.agent == "alice"
        assert sorted(fake.bridges[f"cti-b-{ch}"]) == sorted([ch, leg])


async def test_silent_link_is_detected_by_keepalive_and_reconnected() -> None:
    async with through_proxy(keepalive_s=0.2, keepalive_timeout_s=0.3) as (fake, proxy, adapter, col):
        proxy.blackhole(True)
        assert await eventually(lambda: not adapter.ready, within=5)
        proxy.blackhole(False)
        await wait_ready(adapter)
        ch = fake.incoming("0612345678", "0170000100")
        await col.wait(lambda e: e.provider_call_id == ch and e.kind is EventKind.QUEUED)


async def test_slow_link_still_delivers_every_event_in_order() -> None:
    async with through_proxy() as (fake, proxy, adapter, col):
        proxy.slow(0.05)
        ch, call_id = await _answered_call(fake, adapter, col, "alice")
        fake.hangup(ch)
        await col.kind(EventKind.ENDED, call_id)
        assert [s[0] for s in normalize(col.of(call_id))] == ["created", "queued", "ringing", "answered", "ended"]


async def test_restarted_adapter_adopts_connected_calls_with_the_same_event_ids() -> None:
    """A new process (empty memory) finds an answered call: it is answered, not abandoned."""
    async with through_proxy() as (fake, _proxy, adapter, col):
        ch, call_id = await _answered_call(fake, adapter, col, "alice")
        before = {e.kind: e.event_id for e in col.of(call_id)}
        await adapter.stop()
        fresh = make_adapter(adapter.base.removesuffix("/ari"))
        await fresh.start()
        col2 = Collector(fresh)
        try:
            await wait_ready(fresh)
            answered = await col2.kind(EventKind.ANSWERED, call_id)
            assert answered.agent == "alice" and answered.event_id == before[EventKind.ANSWERED]
            assert col2.of(call_id)[0].event_id == before[EventKind.CREATED]
            fake.hangup(ch)
            ended = await col2.kind(EventKind.ENDED, call_id)
            assert ended.data["cause"] == "normal"
            assert await eventually(lambda: not fake.channels and not fake.bridges)
        finally:
            await fresh.stop()
            await col2.close()
