"""A pop reaches the agent's sockets on the node that built it at once (no bus round trip),
exactly once, and still reaches the agent's sockets on other nodes through the bus."""

from __future__ import annotations

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


def node(name: str, bus: MemoryBus) -> Any:
    return SimpleNamespace(node_id=name, bus=bus, hub=RecordingHub(), settings=Settings())


async def test_a_pop_is_pushed_locally_once_and_reaches_the_other_nodes_through_the_bus() -> None:
    bus = MemoryBus()
    a, b = node("node-a", bus), node("node-b", bus)
    pop = {"type": "screen_pop", "tenant": "default", "agent": "alice", "call_id": "c1"}

    await CtiApp._publish_pop(a, pop)
    assert a.hub.sent == [("default", "alice", pop)]  # before any consumer ran

    s = bus._stream(S.POPS)
    entries = [Message(f"{i}-0", S.POPS, d) for i, d in enumerate(s.entries)]
    assert [e.data[POP_DELIVERED_BY] for e in entries] == ["node-a"]
    await CtiApp._on_pops_ws(a, entries)  # node A's own consumer: already delivered
    await CtiApp._on_pops_ws(b, entries)  # node B: alice may have a socket there too
    assert a.hub.sent == [("default", "alice", pop)]
    assert b.hub.sent == [("default", "alice", pop)]  # the marker stays internal
