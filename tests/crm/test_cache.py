"""CachedLookup: TTL, negative TTL, failures not cached, one request for concurrent lookups, timeout."""

from __future__ import annotations

import asyncio

import pytest

from cti.clock import ManualClock
from cti.crm.cache import FAILED, OK, PENDING, CachedLookup
from cti.model import Contact

CLAIRE = Contact(id="c-1", name="Claire")


class Crm:
    name = "fake"

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.fail = False
        self.gate = asyncio.Event()
        self.gate.set()

    async def lookup(self, e164: str) -> list[Contact]:
        self.asked.append(e164)
        await self.gate.wait()
        if self.fail:
            raise TimeoutError("crm timeout")
        return [CLAIRE] if e164 == "+33612345678" else []


async def test_matches_kept_ttl_and_misses_negative_ttl():
    crm, clock = Crm(), ManualClock()
    c = CachedLookup(crm, clock, ttl=300, negative_ttl=60, timeout=1)
    assert (await c.lookup_fast("+33612345678"))[:2] == (OK, [CLAIRE])
    assert (await c.lookup_fast("+33600000000"))[:2] == (OK, [])
    await clock.advance(61)
    await c.lookup_fast("+33612345678")
    await c.lookup_fast("+33600000000")
    assert crm.asked == ["+33612345678", "+33600000000", "+33600000000"]  # only the miss expired
    await clock.advance(240)
    await c.lookup_fast("+33612345678")
    assert crm.asked[-1] == "+33612345678" and len(crm.asked) == 4
    assert (c.hits, c.misses) == (1, 4)


async def test_failures_are_not_cached():
    crm = Crm()
    crm.fail = True
    c = CachedLookup(crm, ManualClock(), timeout=1)
    assert (await c.lookup_fast("+33612345678"))[:2] == (FAILED, [])
    crm.fail = False
    assert (await c.lookup_fast("+33612345678"))[:2] == (OK, [CLAIRE])


async def test_concurrent_lookups_share_one_request_and_late_answer_resolves_later():
    crm = Crm()
    crm.gate.clear()
    c = CachedLookup(crm, ManualClock(), timeout=0.02)
    (s1, m1, later1), (s2, _, later2) = await asyncio.gather(
        c.lookup_fast("+33612345678"), c.lookup_fast("+33612345678")
    )
    assert (s1, s2, m1) == (PENDING, PENDING, []) and crm.asked == ["+33612345678"]
    crm.gate.set()
    assert await asyncio.wait_for(later1, 1) == (OK, [CLAIRE])
    assert await asyncio.wait_for(later2, 1) == (OK, [CLAIRE])
    assert (await c.lookup_fast("+33612345678"))[:2] == (OK, [CLAIRE])  # and it is cached now
    assert len(crm.asked) == 1


async def test_invalidate_and_close():
    crm = Crm()
    c = CachedLookup(crm, ManualClock(), timeout=1)
    await c.lookup("+33600000000")
    c.invalidate("+33600000000")
    await c.lookup("+33600000000")
    assert len(crm.asked) == 2
    crm.gate.clear()
    task = asyncio.create_task(c.lookup("+33611111111"))
    await asyncio.sleep(0)
    await c.close()
    with pytest.raises(asyncio.CancelledError):
        await task
