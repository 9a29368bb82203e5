"""A separate process hammering RedisReservations (used by test_reservations.py).

    python -m tests.routing.resv_worker REDIS_URL NODE ITERATIONS

For every reservation won it increments a per-agent "holders" counter, checks
that it does not exceed the agent's capacity, decrements it, then releases.
Two processes doing this at once detect any double booking. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys

import redis.asyncio as aioredis

from cti.routing.reservations import RedisReservations

AGENTS = {"a1": 1, "a2": 1, "a3": 1, "blend": 2}


async def main(url: str, node: str, iterations: int) -> dict[str, int]:
    r = aioredis.Redis.from_url(url, socket_timeout=5, socket_keepalive=True, health_check_interval=10)
    resv = RedisReservations(r)
    rng = random.Random(node)
    won = lost = violations = 0
    for i in range(iterations):
        agent = rng.choice(list(AGENTS))
        call = f"{node}-{i}"
        if not await resv.reserve(agent, call, capacity=AGENTS[agent], ttl_s=30):
            lost += 1
            continue
        won += 1
        holders = await r.incr(f"check:{agent}")
        if holders > AGENTS[agent]:
            violations += 1
        if rng.random() < 0.5:
            await asyncio.sleep(0)
        await r.decr(f"check:{agent}")
        await resv.release(agent, call)
    await r.aclose()
    return {"won": won, "lost": lost, "violations": violations}


if __name__ == "__main__":
    out = asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    print(json.dumps(out))
