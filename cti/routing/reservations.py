"""Agent reservations: two routing nodes never offer the same agent two calls at once.

Before ringing an agent the router reserves (agent, call_id). A reservation
expires by itself (TTL) so a crashed node cannot hold an agent forever; it is
refreshed with a long TTL while the agent is on the call and released when the
leg ends. An agent with capacity N may hold N reservations.

`MemoryReservations` serves one process; `RedisReservations` serves several
nodes on one Redis: check-and-set runs in one Lua script (atomic on the
server, and it reads the server's clock, so node clocks do not matter).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from redis.exceptions import NoScriptError

log = structlog.get_logger("cti.routing.reservations")


@dataclass(frozen=True, slots=True)
class Hold:
    """Reserve (agent, call_id), or refresh its TTL if it is already held."""

    agent: str
    call_id: str
    capacity: int = 1
    ttl_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Free:
    """Release (agent, call_id)."""

    agent: str
    call_id: str


class Reservations(Protocol):
    async def apply(self, ops: Sequence[Hold | Free]) -> list[bool]:
        """Run `ops` in order, in one round trip: a Hold answers whether it is held, a Free True.
        Raises if the store cannot be reached (then none, some or all of them may have run)."""
        ...

    async def reserve(self, agent: str, call_id: str, *, capacity: int = 1, ttl_s: float = 30.0) -> bool:
        """True if (agent, call_id) is now held (or was already: the TTL is refreshed)."""
        ...

    async def release(self, agent: str, call_id: str) -> None: ...

    async def held(self, agent: str) -> list[str]:
        """Call ids currently holding the agent."""
        ...


class MemoryReservations:
    """In-process reservations; `now` defaults to time.monotonic (pass a clock's for simulations)."""

    def __init__(self, now: Callable[[], float] | None = None) -> None:
        self._now = now or time.monotonic
        self._held: dict[str, dict[str, float]] = {}

    def _live(self, agent: str) -> dict[str, float]:
        now = self._now()
        held = self._held.setdefault(agent, {})
        for cid in [c for c, exp in held.items() if exp <= now]:
            del held[cid]
        return held

    async def reserve(self, agent: str, call_id: str, *, capacity: int = 1, ttl_s: float = 30.0) -> bool:
        held = self._live(agent)
        if call_id not in held and len(held) >= capacity:
            return False
        held[call_id] = self._now() + ttl_s
        return True

    async def release(self, agent: str, call_id: str) -> None:
        self._held.get(agent, {}).pop(call_id, None)

    async def apply(self, ops: Sequence[Hold | Free]) -> list[bool]:
        out = []
        for op in ops:
            if isinstance(op, Hold):
                out.append(await self.reserve(op.agent, op.call_id, capacity=op.capacity, ttl_s=op.ttl_s))
            else:
                await self.release(op.agent, op.call_id)
                out.append(True)
        return out

    async def held(self, agent: str) -> list[str]:
        return sorted(self._live(agent))


# KEYS[1]: the agent's hash (call_id -> expiry in ms, server time); ARGV: call_id, capacity, ttl_ms
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fields = redis.call('HGETALL', KEYS[1])
local live = 0
local maxexp = 0
for i = 1, #fields, 2 do
  local exp = tonumber(fields[i + 1])
  if exp <= now then
    redis.call('HDEL', KEYS[1], fields[i])
  elseif fields[i] ~= ARGV[1] then
    live = live + 1
    if exp > maxexp then maxexp = exp end
  end
end
if live >= tonumber(ARGV[2]) then
  return 0
end
local exp = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], exp)
if exp > maxexp then maxexp = exp end
redis.call('PEXPIREAT', KEYS[1], maxexp)
return 1
"""

_HELD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fields = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #fields, 2 do
  if tonumber(fields[i + 1]) > now then table.insert(out, fields[i]) end
end
return out
"""


class RedisReservations:
    """Reservations shared by every node on one Redis (`redis.asyncio` client, or a URL)."""

    def __init__(self, redis: Any | str, *, tenant: str = "default", prefix: str = "cti") -> None:
        if isinstance(redis, str):
            import redis.asyncio as aioredis

            redis = aioredis.Redis.from_url(redis, socket_timeout=5.0, socket_connect_timeout=5.0,
                                            socket_keepalive=True, health_check_interval=10)
            self._owned = True
        else:
            self._owned = False
        self.redis = redis
        self._prefix = f"{prefix}:{tenant}:agent_resv:"
        self._reserve = redis.register_script(_RESERVE)
        self._held = redis.register_script(_HELD)

    def key(self, agent: str) -> str:
        return self._prefix + agent

    async def reserve(self, agent: str, call_id: str, *, capacity: int = 1, ttl_s: float = 30.0) -> bool:
        ttl_ms = max(1, int(ttl_s * 1000))
        ok = await self._reserve(keys=[self.key(agent)], args=[call_id, int(capacity), ttl_ms])
        return bool(int(ok))

    async def release(self, agent: str, call_id: str) -> None:
        await self.redis.hdel(self.key(agent), call_id)

    async def apply(self, ops: Sequence[Hold | Free]) -> list[bool]:
        # One pipeline: the router used to wait a round trip per reservation, and on a busy loop
        # each round trip costs a whole loop cycle (a minute's refresh of 800 calls stalled routing
        # for seconds). Each script stays atomic on the server; the pipeline keeps their order.
        if not ops:
            return []
        try:
            results = await self._pipeline(ops)
        except NoScriptError:  # a restarted (or flushed) Redis forgot the script: load it, run again
            await self.redis.script_load(_RESERVE)
            results = await self._pipeline(ops)  # holds and frees are idempotent
        return [bool(int(r)) if isinstance(op, Hold) else True for op, r in zip(ops, results, strict=True)]

    async def _pipeline(self, ops: Sequence[Hold | Free]) -> list[Any]:
        # EVALSHA by hand: redis-py's scripts in a pipeline cost a SCRIPT EXISTS round trip each time
        pipe = self.redis.pipeline(transaction=False)
        for op in ops:
            if isinstance(op, Hold):
                pipe.evalsha(self._reserve.sha, 1, self.key(op.agent), op.call_id, int(op.capacity),
                             max(1, int(op.ttl_s * 1000)))
            else:
                pipe.hdel(self.key(op.agent), op.call_id)
        results = await pipe.execute(raise_on_error=False)
        for r in results:
            if isinstance(r, Exception):
                raise r
        return list(results)

    async def held(self, agent: str) -> list[str]:
        raw = await self._held(keys=[self.key(agent)])
        return sorted(x.decode() if isinstance(x, bytes) else str(x) for x in raw)

    async def aclose(self) -> None:
        if self._owned:
            await self.redis.aclose()


def open_reservations(url: str, *, tenant: str = "default") -> MemoryReservations | RedisReservations:
    """Reservations for a bus URL: in memory for `memory://`, on that Redis for `redis://` / `rediss://`."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisReservations(url, tenant=tenant)
    if url.startswith("memory://"):
        return MemoryReservations()
    raise ValueError(f"no reservations backend for {url.split('@')[-1]!r} (memory:// or redis://)")
