"""In-process bus with the same semantics as the Redis Streams backend.

Entries live in one list per stream; each group keeps a cursor and a pending
table, so at-least-once delivery, retries and dead letters behave as on Redis.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from cti.bus.base import DEAD_SUFFIX, Handler, Message

log = structlog.get_logger(__name__)


@dataclass
class _Pending:
    consumer: str
    deliveries: int
    delivered_at: float


@dataclass
class _Group:
    cursor: int = 0
    pending: dict[int, _Pending] = field(default_factory=dict)


@dataclass
class _Stream:
    entries: list[dict[str, Any]] = field(default_factory=list)
    groups: dict[str, _Group] = field(default_factory=dict)
    # consumers parked until the next publish: one future each, resolved directly, so a
    # wake-up costs one loop iteration (a Condition costs a lock round and a wait_for task)
    waiters: set[asyncio.Future[None]] = field(default_factory=set)


class MemoryBus:
    def __init__(
        self,
        url: str = "memory://",
        *,
        max_deliveries: int = 5,
        claim_idle_ms: int = 30_000,
        batch: int = 256,
        block_ms: int = 1_000,
        **_: Any,
    ) -> None:
        self.url = url
        self.max_deliveries = max_deliveries
        self.claim_idle_ms = claim_idle_ms
        self.batch = batch
        self.block_ms = block_ms
        self._streams: dict[str, _Stream] = {}

    def _stream(self, name: str) -> _Stream:
        s = self._streams.get(name)
        if s is None:
            s = self._streams[name] = _Stream()
        return s

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    async def publish(self, stream: str, data: dict[str, Any]) -> str:
        return (await self.publish_many(stream, [data]))[0]

    async def publish_many(self, stream: str, items: list[dict[str, Any]]) -> list[str]:
        s = self._stream(stream)
        start = len(s.entries)
        s.entries.extend(items)
        waiters, s.waiters = s.waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        return [f"{i}-0" for i in range(start, start + len(items))]

    def _group(self, s: _Stream, group: str, from_start: bool = True) -> _Group:
        g = s.groups.get(group)
        if g is None and not from_start:
            g = s.groups[group] = _Group(cursor=len(s.entries))
        if g is None:
            # like XGROUP CREATE ... $ MKSTREAM? No: "0", so a group created after
            # publishing still sees earlier entries (the pipeline starts consumers late).
            g = s.groups[group] = _Group()
        return g

    async def consume(
        self, stream: str, group: str, consumer: str, handler: Handler, *, from_start: bool = True,
        linger_ms: int = 0,
    ) -> None:
        s = self._stream(stream)
        g = self._group(s, group, from_start)
        loop = asyncio.get_running_loop()
        # crash recovery: our own pending entries first
        own = [i for i, p in g.pending.items() if p.consumer == consumer]
        if own:
            await self._deliver(stream, s, g, consumer, sorted(own), handler)
        last_claim = time.monotonic()
        while True:
            now = time.monotonic()
            if now - last_claim >= self.claim_idle_ms / 1000 / 4:
                last_claim = now
                idle = [
                    i
                    for i, p in g.pending.items()
                    if p.consumer != consumer and (now - p.delivered_at) * 1000 >= self.claim_idle_ms
                ]
                if idle:
                    await self._deliver(stream, s, g, consumer, sorted(idle)[: self.batch], handler)
            if g.cursor >= len(s.entries):
                fut = loop.create_future()
                s.waiters.add(fut)
                try:
                    async with asyncio.timeout(self.block_ms / 1000):
                        await fut
                except TimeoutError:
                    continue
                finally:
                    s.waiters.discard(fut)
                if g.cursor >= len(s.entries):
                    continue  # another consumer of the group took the entries
            ids = list(range(g.cursor, min(len(s.entries), g.cursor + self.batch)))
            g.cursor = ids[-1] + 1
            await self._deliver(stream, s, g, consumer, ids, handler)
            if linger_ms > 0 and len(ids) < self.batch:
                await asyncio.sleep(linger_ms / 1000)

    async def _deliver(
        self, stream: str, s: _Stream, g: _Group, consumer: str, ids: list[int], handler: Handler
    ) -> None:
        now = time.monotonic()
        msgs = []
        for i in ids:
            p = g.pending.get(i)
            deliveries = (p.deliveries + 1) if p else 1
            g.pending[i] = _Pending(consumer, deliveries, now)
            if deliveries > self.max_deliveries:
                # already failed (or was in flight when its consumer died) max_deliveries times
                await self._dead(stream, g, i, s.entries[i], deliveries - 1, "delivery limit reached")
                continue
            msgs.append(Message(f"{i}-0", stream, s.entries[i], deliveries))
        if not msgs:
            return
        try:
            await handler(msgs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # isolate the poison entry below
            error = f"{type(exc).__name__}: {exc}"
            # retry one by one so a poison entry cannot block its neighbours
            for m in msgs:
                await self._deliver_one(stream, s, g, consumer, m, handler, error)
            return
        for m in msgs:
            g.pending.pop(int(m.id.split("-")[0]), None)

    async def _deliver_one(
        self, stream: str, s: _Stream, g: _Group, consumer: str, m: Message, handler: Handler, error: str
    ) -> None:
        """Retry one entry; every delivery (the failed batch included) counts toward max_deliveries."""
        i = int(m.id.split("-")[0])
        deliveries = m.deliveries
        while deliveries < self.max_deliveries:
            if i not in g.pending:
                return  # claimed and finished by another consumer meanwhile
            deliveries += 1
            g.pending[i] = _Pending(consumer, deliveries, time.monotonic())
            try:
                await handler([Message(m.id, stream, m.data, deliveries)])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any handler failure is a retry
                error = f"{type(exc).__name__}: {exc}"
                continue
            g.pending.pop(i, None)
            return
        await self._dead(stream, g, i, m.data, deliveries, error)

    async def _dead(self, stream: str, g: _Group, i: int, data: dict[str, Any], n: int, error: str) -> None:
        group = next((name for name, gg in self._stream(stream).groups.items() if gg is g), "")
        log.warning("bus_dead_letter", stream=stream, group=group, entry=f"{i}-0", deliveries=n, error=error)
        await self.publish(
            stream + DEAD_SUFFIX,
            {"entry": f"{i}-0", "group": group, "data": data, "error": error, "deliveries": n},
        )
        g.pending.pop(i, None)

    async def dead_letters(self, stream: str, count: int = 100) -> list[Message]:
        s = self._stream(stream + DEAD_SUFFIX)
        return [Message(f"{i}-0", stream + DEAD_SUFFIX, d) for i, d in enumerate(s.entries[:count])]

    async def lag(self, stream: str, group: str) -> int:
        s = self._stream(stream)
        g = s.groups.get(group)
        if g is None:
            return len(s.entries)
        return len(s.entries) - g.cursor + len(g.pending)
