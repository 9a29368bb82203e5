"""One bus interface, two backends.

Semantics both backends honour (and the shared test suite checks):
- `publish(stream, data)` appends a JSON-able dict; returns the entry id.
- `consume(stream, group, consumer, handler)` runs until cancelled. Each consumer
  group gets every entry once; inside a group, entries are shared among consumers.
  The handler gets a batch (list of Message); entries are acknowledged only after
  the handler returned. If the handler raises, the batch is retried one entry at a
  time so one poison entry cannot hold back the others; an entry delivered
  `max_deliveries` times without success goes to the dead-letter stream
  `<stream>:dead` (with the error) and is acknowledged.
- At start a consumer first re-reads its own pending entries (crash recovery),
  and periodically claims entries idle in other consumers' pending lists for
  longer than `claim_idle_ms` (a dead consumer's work is taken over).
- Handlers must therefore be idempotent (at-least-once delivery).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

DEAD_SUFFIX = ":dead"


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    stream: str
    data: dict[str, Any]
    deliveries: int = 1


Handler = Callable[[list[Message]], Awaitable[None]]


class Bus(Protocol):
    url: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, stream: str, data: dict[str, Any]) -> str: ...

    async def publish_many(self, stream: str, items: list[dict[str, Any]]) -> list[str]: ...

    async def consume(
        self, stream: str, group: str, consumer: str, handler: Handler, *, from_start: bool = True,
        linger_ms: int = 0,
    ) -> None:
        """from_start=False creates a new group at the end of the stream (XGROUP CREATE $):
        for live fan-out (websockets), where history must not be replayed.

        linger_ms > 0: after a batch smaller than the batch size, wait that long before the
        next read, so entries accumulate. For consumers whose latency does not matter (store
        writers): under load they make fewer, larger reads and transactions."""
        ...

    async def dead_letters(self, stream: str, count: int = 100) -> list[Message]: ...

    async def lag(self, stream: str, group: str) -> int:
        """Entries not yet acknowledged by the group (pending + never delivered)."""
        ...

    async def ping(self) -> bool: ...


def open_bus(url: str, **options: Any) -> Bus:
    """Build the backend named by the URL scheme (`memory://`, `redis://`, `rediss://`)."""
    if url.startswith("memory://"):
        from cti.bus.memory import MemoryBus

        return MemoryBus(url, **options)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from cti.bus.redis import RedisBus

        return RedisBus(url, **options)
    raise ValueError(f"bus url {url!r}: scheme must be memory:// or redis://")
