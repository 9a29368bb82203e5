"""Store writers step aside for the real-time path: what `step_aside` guarantees on asyncio's loop."""

from __future__ import annotations

import asyncio
import socket

from cti.yielding import step_aside


async def _order_of(pause) -> list[str]:
    """A writer runs three steps; data reaches a socket while its second step runs."""
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    order: list[str] = []

    def on_read() -> None:
        b.recv(16)
        order.append("read")

    loop.add_reader(b.fileno(), on_read)
    try:
        for i in range(3):
            if i == 1:
                a.send(b"ring")  # a pop's event arrives mid-step
            order.append(f"step{i}")
            await pause()
        await asyncio.sleep(0.01)
    finally:
        loop.remove_reader(b.fileno())
        a.close()
        b.close()
    return order


async def test_a_socket_read_goes_before_the_writers_next_step() -> None:
    assert await _order_of(step_aside) == ["step0", "step1", "read", "step2"]


async def test_a_bare_yield_would_run_the_writers_next_step_first() -> None:
    # why step_aside is a timer: what sleep(0) reschedules runs before the next poll's sockets
    assert await _order_of(lambda: asyncio.sleep(0)) == ["step0", "step1", "step2", "read"]



async def test_a_long_batch_runs_as_several_loop_steps() -> None:
    from cti.yielding import in_steps

    seen: list[int] = []
    turns: list[int] = []
    loop = asyncio.get_running_loop()

    def tick() -> None:  # counts the loop turns that ran while the batch went on
        turns.append(len(seen))
        if len(seen) < 20:
            loop.call_soon(tick)

    loop.call_soon(tick)
    async for n in in_steps(range(20), every=8):
        seen.append(n)
    assert seen == list(range(20))
    # others ran after items 0-7 and 8-15, before the next item: three steps, not one
    assert {8, 16} <= set(turns)
