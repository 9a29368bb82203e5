"""A pop reaches the agent's sockets on the node that built it at once (no bus round trip),
exactly once, and still reaches the agent's sockets on other nodes through the bus."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace
from typing import Any

from cti.app import POP_DELIVERED_BY, CtiApp
from cti.bus import streams as S
from cti.bus.base import Message
from cti.bus.memory import MemoryBus
from cti.config import Settings


class RecordingHub:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def to_agent(self, tenant: str, agent: str, message: dict[str, Any], **_: Any) -> int:
        self.sent.append((tenant, agent, message))
        return 1


def node(name: str, bus: Any) -> Any:
    return SimpleNamespace(node_id=name, bus=bus, hub=RecordingHub(), settings=Settings(),
                           _pops_out=asyncio.Queue())


async def forwarded(n: Any) -> None:
    """Run the node's pops publisher until what it queued is on the bus."""
    task = asyncio.create_task(CtiApp._pops_publisher(n))
    while not n._pops_out.empty():  # noqa: ASYNC110 - polling a queue we do not own
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_pop_is_pushed_locally_once_and_reaches_the_other_nodes_through_the_bus() -> None:
    bus = MemoryBus()
    a, b = node("node-a", bus), node("node-b", bus)
    pop = {"type": "screen_pop", "tenant": "default", "agent": "alice", "call_id": "c1"}

    await CtiApp._publish_pop(a, pop)
    assert a.hub.sent == [("default", "alice", pop)]  # before any consumer ran
    await forwarded(a)

    s = bus._stream(S.POPS)
    entries = [Message(f"{i}-0", S.POPS, d) for i, d in enumerate(s.entries)]
    assert [e.data[POP_DELIVERED_BY] for e in entries] == ["node-a"]
    await CtiApp._on_pops_ws(a, entries)  # node A's own consumer: already delivered
    await CtiApp._on_pops_ws(b, entries)  # node B: alice may have a socket there too
    assert a.hub.sent == [("default", "alice", pop)]
    assert b.hub.sent == [("default", "alice", pop)]  # the marker stays internal


class StuckBus:
    """A bus whose round trips take 1 s (or an outage): what it was given, in order."""

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    async def publish_many(self, stream: str, items: list[dict[str, Any]]) -> None:
        await asyncio.sleep(1.0)
        self.published.extend(items)


async def test_a_slow_bus_never_holds_the_local_push_back_and_keeps_the_pops_in_order() -> None:
    n = node("node-a", StuckBus())
    task = asyncio.create_task(CtiApp._pops_publisher(n))
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(5):
            await CtiApp._publish_pop(n, {"type": "screen_pop", "tenant": "default", "agent": "alice",
                                          "call_id": f"c{i}"})
        assert loop.time() - t0 < 0.1 and len(n.hub.sent) == 5  # pushed here without waiting
        while len(n.bus.published) < 5:  # noqa: ASYNC110 - polling a fake
            await asyncio.sleep(0.05)
        assert [p["call_id"] for p in n.bus.published] == [f"c{i}" for i in range(5)]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_each_pop_of_a_burst_is_sent_before_the_next_one_is_built() -> None:
    """Three phones ring in one bus batch: the socket writer of the first pop runs before the
    second pop is built, not after the whole batch."""
    import datetime as dt

    from cti.model import CallEvent, Direction, EventKind

    order: list[str] = []
    loop = asyncio.get_running_loop()

    class Pop:
        async def on_event(self, e: CallEvent) -> None:
            order.append(f"built {e.call_id}")
            # what Hub.to_agent does: the connection's writer task sends on the next loop turn
            loop.call_soon(order.append, f"sent {e.call_id}")

    n = SimpleNamespace(screen_pop=Pop(), _events=CtiApp._events)
    batch = [
        Message(f"{i}-0", S.EVENTS, CallEvent(
            event_id=f"e{i}", provider="sim", provider_call_id=f"c{i}", call_id=f"c{i}", kind=EventKind.RINGING,
            occurred_at=dt.datetime.now(dt.UTC), agent=f"agent{i}", direction=Direction.INBOUND,
            from_number="+33612345678", to_number="+33170000100").to_dict())
        for i in range(3)
    ]
    await CtiApp._on_pop_events(n, batch)
    await asyncio.sleep(0)
    assert order == ["built c0", "sent c0", "built c1", "sent c1", "built c2", "sent c2"]
