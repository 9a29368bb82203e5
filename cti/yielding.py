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
CPU-heavy phases, or every few items of a long loop (`in_steps`). A pause inside a
database transaction keeps its lock meanwhile: that makes the other writers wait, never
the pop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import TypeVar

T = TypeVar("T")

STEP_ASIDE_S = 0.0005  # a writer's batch takes a few of these longer; it lingers 50 ms anyway


async def step_aside(seconds: float = STEP_ASIDE_S) -> None:
    await asyncio.sleep(seconds)


async def in_steps(items: Iterable[T], every: int = 8) -> AsyncIterator[T]:
    """The items, stepping aside before each `every`-th one after the first: a long batch
    runs as several loop steps instead of one."""
    for n, item in enumerate(items):
        if n and n % every == 0:
            await step_aside()
        yield item
