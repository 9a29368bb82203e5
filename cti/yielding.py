"""Background work steps aside for the real-time path on the shared event loop.

A node's event loop runs the screen pop, routing and socket writes beside the store
writers (event fold, stats, activities, agents' call updates). A loop step cannot be
interrupted, so a pop that arrives while a writer's batch runs waits for that step to end,
and then for the next one: every writer step the loop had already queued runs before the
pop's socket read, and between each of the pop's own hops.

`step_aside()` ends a writer's step on a *timer* rather than `asyncio.sleep(0)`. asyncio
runs, in each loop turn, first what was already scheduled, then the sockets that became
readable, then the timers that are due; so a writer that steps aside comes back after the
pop's read and hops, and at most once per `STEP_ASIDE_S`. Writers call it between their
CPU-heavy phases, outside their database transactions (a lock held while waiting would
block the other writers instead).
"""

from __future__ import annotations

import asyncio

STEP_ASIDE_S = 0.0005  # a writer's batch takes a few of these longer; it lingers 50 ms anyway


async def step_aside(seconds: float = STEP_ASIDE_S) -> None:
    await asyncio.sleep(seconds)
