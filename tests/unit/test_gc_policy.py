"""The GC policy: survivors of full collections are frozen (later collections skip them), and
the periodic full collection still reclaims garbage that was frozen."""

from __future__ import annotations

import asyncio
import gc
import weakref

from cti import gc_policy


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


async def test_survivors_of_a_full_collection_are_frozen_and_frozen_cycles_are_reclaimed_later() -> None:
    gc_policy.tune_gc()
    try:
        loop = asyncio.create_task(gc_policy.freeze_loop(check_s=0.01, full_every_s=3600))
        await asyncio.sleep(0.05)  # the loop is running
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: only the cycle collector can free it
        ref = weakref.ref(a)

        def tracked(obj: object) -> bool:  # get_objects() leaves the frozen generation out
            return any(o is obj for o in gc.get_objects())

        assert tracked(a)
        gc.collect()  # a full collection, as CPython runs by itself
        for _ in range(100):
            if not tracked(a):
                break
            await asyncio.sleep(0.01)
        assert not tracked(a)  # the survivors (our cycle among them) were frozen
        del a, b
        gc.collect()
        assert ref() is not None  # frozen: collections skip it, so it is not freed yet
        gc_policy.full_collect()  # what freeze_loop runs every full_every_s
        assert ref() is None
        loop.cancel()
    finally:
        gc.unfreeze()


def test_the_periodic_full_collection_gives_free_pages_back_to_the_os(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import sys

    trims: list[int] = []
    monkeypatch.setattr(gc_policy, "_malloc_trim", lambda pad: trims.append(pad) or 1)
    try:
        gc_policy.full_collect()
    finally:
        gc.unfreeze()
    assert trims == [0]
    if sys.platform.startswith("linux"):
        monkeypatch.undo()
        assert gc_policy._malloc_trim is not None  # found in glibc here
        assert gc_policy.release_free_memory() is True
