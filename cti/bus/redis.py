"""Redis Streams backend of the bus (semantics: see cti.bus.base).

One stream per bus stream, one consumer group per stage. Entries hold a single
field `d` with the JSON of the message. Delivery counts live in Redis (the
pending entries list), so they survive a consumer crash: an entry that keeps
killing its consumer is dead-lettered after `max_deliveries` re-reads too.

Connection loss never ends `consume`: it logs `bus_connection_lost`, waits
with exponential backoff and jitter, then re-creates the group (Redis may have
restarted empty) and re-reads its own pending entries before reading new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cti.bus.base import DEAD_SUFFIX, Handler, Message

try:  # orjson is faster; json is always there
    import orjson

    def _dumps(data: dict[str, Any]) -> bytes:
        return orjson.dumps(data)

    def _loads(raw: bytes | str) -> Any:
        return orjson.loads(raw)

except ImportError:  # pragma: no cover - depends on the environment
    import json

    def _dumps(data: dict[str, Any]) -> bytes:
        return json.dumps(data, separators=(",", ":"), default=str).encode()

    def _loads(raw: bytes | str) -> Any:
        return json.loads(raw)


log = structlog.get_logger(__name__)

# XADD many entries in one command: one reply to parse instead of one per entry
# (redis-py's per-reply parsing, not Redis, is what limits a pipelined XADD loop).
# ARGV[1] is the approximate MAXLEN (0: unbounded), the rest are payloads.
_XADD_MANY = """
local ids = {}
local maxlen = tonumber(ARGV[1])
for i = 2, #ARGV do
  if maxlen > 0 then
    ids[i - 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'd', ARGV[i])
  else
    ids[i - 1] = redis.call('XADD', KEYS[1], '*', 'd', ARGV[i])
  end
end
return ids
"""
_XADD_CHUNK = 500
_LAG_SCAN_MAX = 100_000  # entries per script call: keeps each call short for the server

T = TypeVar("T")
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError, asyncio.TimeoutError)


def backoff_delay(
    attempt: int, *, base: float = 0.1, cap: float = 10.0, rng: random.Random | None = None
) -> float:
    """Jittered exponential backoff: uniform in [base/2, min(cap, base * 2**attempt)]."""
    r = rng or random
    return r.uniform(base / 2, min(cap, base * (2 ** min(attempt, 30))))


def _raise_if_cancelled() -> None:
    """redis-py (8.x) can swallow a CancelledError that lands mid-command; honour it anyway."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


class RedisBus:
    def __init__(
        self,
        url: str,
        *,
        max_deliveries: int = 5,
        claim_idle_ms: int = 30_000,
        batch: int = 256,
        block_ms: int = 1_000,
        socket_timeout_s: float = 5.0,
        health_check_interval_s: int = 10,
        maxlen: int = 1_000_000,
        **_: Any,
    ) -> None:
        """`maxlen`: each stream keeps about this many newest entries (0: unbounded), a
        safety cap so Redis memory cannot grow forever; size it well above what consumers
        can fall behind by, since trimmed entries are gone even if a group never read them."""
        if max_deliveries < 1:
            raise ValueError("bus max_deliveries must be >= 1")
        self.url = url
        self.max_deliveries = max_deliveries
        self.claim_idle_ms = claim_idle_ms
        self.batch = batch
        self.block_ms = block_ms
        # a blocking XREADGROUP must never outlive the socket timeout
        self.socket_timeout_s = max(socket_timeout_s, block_ms / 1000 + 2.0)
        self.health_check_interval_s = health_check_interval_s
        self.maxlen = max(0, int(maxlen))
        self.forget_consumers_after_ms = max(10 * claim_idle_ms, 300_000)
        self._client: aioredis.Redis | None = None
        self._xadd_many: Any = None

    # -- connection ---------------------------------------------------------

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            self._client = aioredis.Redis.from_url(
                self.url,
                socket_timeout=self.socket_timeout_s,
                socket_connect_timeout=min(self.socket_timeout_s, 5.0),
                socket_keepalive=True,
                health_check_interval=self.health_check_interval_s,
                retry_on_timeout=False,
                decode_responses=False,
            )
        return self._client

    async def start(self) -> None:
        _ = self.client

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            self._xadd_many = None
            await client.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.client.ping(), self.socket_timeout_s))
        except asyncio.CancelledError:
            raise
        except Exception:  # unreachable is an answer, not an error
            return False

    async def _retrying(self, what: str, fn: Callable[[], Awaitable[T]], attempts: int = 5) -> T:
        """Run a short command, retrying transient connection errors a few times."""
        for attempt in range(attempts):
            try:
                return await fn()
            except _TRANSIENT as exc:
                if attempt == attempts - 1:
                    raise
                delay = backoff_delay(attempt)
                log.warning(
                    "bus_retry", op=what, attempt=attempt + 1, delay_s=round(delay, 3), error=repr(exc)
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    # -- publishing ---------------------------------------------------------

    async def publish(self, stream: str, data: dict[str, Any]) -> str:
        return (await self.publish_many(stream, [data]))[0]

    async def publish_many(self, stream: str, items: list[dict[str, Any]]) -> list[str]:
        if not items:
            return []
        payloads = [_dumps(d) for d in items]

        if len(payloads) == 1:
            one = payloads[0]
            added = await self._retrying(
                "publish",
                lambda: self.client.xadd(stream, {"d": one}, maxlen=self.maxlen or None, approximate=True),
            )
            return [_s(added)]
        if self._xadd_many is None:
            self._xadd_many = self.client.register_script(_XADD_MANY)

        ids: list[str] = []
        for i in range(0, len(payloads), _XADD_CHUNK):
            chunk = payloads[i : i + _XADD_CHUNK]
            # retried per chunk: a retry after a lost reply may add a chunk twice (at-least-once)
            args = [self.maxlen, *chunk]
            added = await self._retrying("publish", lambda a=args: self._xadd_many(keys=[stream], args=a))
            ids.extend(_s(x) for x in added)
        return ids

    # -- consuming ----------------------------------------------------------

    async def _ensure_group(self, stream: str, group: str, from_start: bool = True) -> None:
        try:
            await self.client.xgroup_create(stream, group, id="0" if from_start else "$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def consume(
        self, stream: str, group: str, consumer: str, handler: Handler, *, from_start: bool = True,
        linger_ms: int = 0,
    ) -> None:
        """Run until cancelled; survives connection loss (see module docstring).

        `from_start=False`: a new group starts at the end of the stream (live fan-out)."""
        attempt = 0
        claim_every = max(0.05, self.claim_idle_ms / 1000 / 4)
        # handled entries whose XACK goes out with the next XREADGROUP: one round trip per
        # batch instead of two (Redis applies the XACK at once; only its reply waits)
        to_ack: list[str] = []

        async def ack_now() -> None:
            nonlocal to_ack
            if to_ack:
                await self.client.xack(stream, group, *to_ack)
                to_ack = []

        while True:
            try:
                await self._ensure_group(stream, group, from_start)
                if attempt:
                    log.info("bus_reconnected", stream=stream, group=group, consumer=consumer)
                attempt = 0
                await ack_now()  # what was handled before the connection was lost
                await self._reread_own(stream, group, consumer, handler)
                last_claim = time.monotonic()
                while True:
                    _raise_if_cancelled()
                    if time.monotonic() - last_claim >= claim_every:
                        last_claim = time.monotonic()
                        await ack_now()  # not held back by the claim's round trips
                        await self._claim_idle(stream, group, consumer, handler)
                    if to_ack:
                        pipe = self.client.pipeline(transaction=False)
                        pipe.xack(stream, group, *to_ack)
                        pipe.xreadgroup(group, consumer, {stream: ">"}, count=self.batch, block=self.block_ms)
                        resp = (await pipe.execute())[1]
                        to_ack = []
                    else:
                        resp = await self.client.xreadgroup(
                            group, consumer, {stream: ">"}, count=self.batch, block=self.block_ms
                        )
                    _raise_if_cancelled()
                    if not resp:
                        continue
                    entries = resp[0][1]
                    to_ack = await self._process(stream, group, consumer, entries, {}, handler, defer_ack=True)
                    if linger_ms > 0 and len(entries) < self.batch:
                        # fewer, larger batches: one XREADGROUP and one XACK for many entries;
                        # acknowledged before the wait, not with the read after it, so what is
                        # handled never shows as pending (bus lag) for the length of a linger
                        await ack_now()
                        await asyncio.sleep(linger_ms / 1000)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):  # handled: not for another node again
                    await asyncio.wait_for(ack_now(), 1.0)
                raise
            except _TRANSIENT as exc:
                delay = backoff_delay(attempt)
                attempt += 1
                _raise_if_cancelled()
                log.warning(
                    "bus_connection_lost", stream=stream, group=group, consumer=consumer,
                    attempt=attempt, retry_in_s=round(delay, 3), error=repr(exc),
                )
                await asyncio.sleep(delay)
            except ResponseError as exc:
                # NOGROUP: the stream or group vanished (FLUSHALL, restart without persistence)
                _raise_if_cancelled()
                delay = backoff_delay(attempt)
                attempt += 1
                log.warning("bus_group_lost", stream=stream, group=group, error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)

    async def _reread_own(self, stream: str, group: str, consumer: str, handler: Handler) -> None:
        """Crash recovery: entries delivered to this consumer name and never acknowledged."""
        last = "0"
        while True:
            resp = await self.client.xreadgroup(group, consumer, {stream: last}, count=self.batch)
            entries = resp[0][1] if resp else []
            if not entries:
                return
            counts = await self._counts(stream, group, consumer, entries)
            await self._process(stream, group, consumer, entries, counts, handler)
            last = _s(entries[-1][0])

    async def _forget_dead_consumers(self, stream: str, group: str, consumer: str) -> None:
        """Drop consumers gone for long with nothing pending (a restarted node gets a new name).

        Safe: a live consumer polls every block_ms (so is never idle that long), and one that
        comes back is re-created by its next XREADGROUP.
        """
        gone_after_ms = self.forget_consumers_after_ms
        for c in await self.client.xinfo_consumers(stream, group):
            name = _s(c["name"])
            if name != consumer and int(c["pending"]) == 0 and int(c["idle"]) > gone_after_ms:
                await self.client.xgroup_delconsumer(stream, group, name)
                log.info("bus_consumer_forgotten", stream=stream, group=group, consumer=name)

    async def _claim_idle(self, stream: str, group: str, consumer: str, handler: Handler) -> None:
        """Take over entries idle too long in other (presumably dead) consumers' pending lists."""
        await self._forget_dead_consumers(stream, group, consumer)
        start = "0-0"
        for _ in range(16):  # bounded per tick so new entries still flow
            resp = await self.client.xautoclaim(
                stream, group, consumer, min_idle_time=self.claim_idle_ms, start_id=start, count=self.batch
            )
            start = _s(resp[0])
            entries = resp[1]
            if entries:
                log.info("bus_claimed", stream=stream, group=group, consumer=consumer, entries=len(entries))
                counts = await self._counts(stream, group, consumer, entries)
                await self._process(stream, group, consumer, entries, counts, handler)
            if start == "0-0":
                return

    async def _counts(
        self, stream: str, group: str, consumer: str, entries: list[Any]
    ) -> dict[str, int]:
        live = [_s(e[0]) for e in entries if e[1]]
        if not live:
            return {}
        rows = await self.client.xpending_range(
            stream, group, min=live[0], max=live[-1], count=len(entries) + 16, consumername=consumer
        )
        return {_s(r["message_id"]): int(r["times_delivered"]) for r in rows}

    async def _process(
        self,
        stream: str,
        group: str,
        consumer: str,
        entries: list[Any],
        counts: dict[str, int],
        handler: Handler,
        *,
        defer_ack: bool = False,
    ) -> list[str]:
        """Hand the entries to `handler` and acknowledge them; with `defer_ack`, the handled
        entries' ids are returned for the caller to acknowledge instead."""
        _raise_if_cancelled()
        msgs: list[Message] = []
        gone: list[str] = []
        bad: list[tuple[str, dict[str, Any], int, str]] = []
        for raw_id, fields in entries:
            eid = _s(raw_id)
            if not fields:  # deleted or trimmed while pending: nothing to deliver
                gone.append(eid)
                continue
            n = counts.get(eid, 1)
            raw = fields.get(b"d", fields.get("d"))
            try:
                data = _loads(raw) if raw is not None else None
                if not isinstance(data, dict):
                    raise ValueError("entry has no JSON object in field 'd'")
            except ValueError as exc:
                bad.append((eid, {"raw": _s(raw or b"")[:1000]}, n, f"undecodable: {exc}"))
                continue
            if n > self.max_deliveries:
                # it already failed (or killed its consumer) max_deliveries times
                bad.append((eid, data, n - 1, "delivery limit reached before this read"))
                continue
            msgs.append(Message(eid, stream, data, n))
        if gone:
            await self.client.xack(stream, group, *gone)
        for eid, data, n, error in bad:
            await self._dead(stream, group, eid, data, n, error)
        if not msgs:
            return []
        try:
            await handler(msgs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # isolate the poison entry below
            if len(msgs) > 1:
                log.warning("bus_batch_failed", stream=stream, group=group, size=len(msgs), error=repr(exc))
            first_error = f"{type(exc).__name__}: {exc}"
            for m in msgs:
                await self._retry_one(stream, group, consumer, m, handler, first_error)
            return []
        ids = [m.id for m in msgs]
        if defer_ack:
            return ids
        await self.client.xack(stream, group, *ids)
        return []

    async def _retry_one(
        self, stream: str, group: str, consumer: str, m: Message, handler: Handler, error: str
    ) -> None:
        deliveries = m.deliveries
        while deliveries < self.max_deliveries:
            # XCLAIM to ourselves bumps the delivery count in Redis, so a crash
            # during these retries does not reset the count
            claimed = await self.client.xclaim(stream, group, consumer, 0, [m.id])
            if not claimed or not claimed[0][1]:
                return  # acknowledged or deleted meanwhile
            deliveries += 1
            try:
                await handler([Message(m.id, stream, m.data, deliveries)])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any handler failure is a retry
                error = f"{type(exc).__name__}: {exc}"
                continue
            await self.client.xack(stream, group, m.id)
            return
        await self._dead(stream, group, m.id, m.data, deliveries, error)

    async def _dead(
        self, stream: str, group: str, eid: str, data: dict[str, Any], n: int, error: str
    ) -> None:
        log.warning("bus_dead_letter", stream=stream, group=group, entry=eid, deliveries=n, error=error)
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(
            stream + DEAD_SUFFIX,
            {"d": _dumps({"entry": eid, "group": group, "data": data, "error": error, "deliveries": n})},
        )
        pipe.xack(stream, group, eid)
        await pipe.execute()

    # -- inspection ---------------------------------------------------------

    async def dead_letters(self, stream: str, count: int = 100) -> list[Message]:
        name = stream + DEAD_SUFFIX
        rows = await self._retrying("dead_letters", lambda: self.client.xrange(name, count=count))
        return [Message(_s(i), name, _loads(f[b"d"])) for i, f in rows]

    async def lag(self, stream: str, group: str) -> int:
        async def go() -> int:
            try:
                groups = await self.client.xinfo_groups(stream)
            except ResponseError:  # no such stream
                return 0
            for g in groups:
                if _s(g["name"]) == group:
                    lag = g.get("lag")
                    if lag is None:  # Redis cannot tell after deletions: count what is after the cursor
                        after = await self.client.xrange(
                            stream, min="(" + _s(g["last-delivered-id"]), count=_LAG_SCAN_MAX
                        )
                        lag = len(after)  # at least this many (capped: this is a gauge, not an audit)
                    return int(lag) + int(g["pending"])
            return int(await self.client.xlen(stream))

        return await self._retrying("lag", go)
