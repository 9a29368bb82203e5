"""Ids seen lately, for in-memory duplicate filters: bounded by age and by count.

An in-memory filter only has to catch what arrives twice at the same live node: a provider
resending an event, or the bus redelivering after a failed handler (seconds late; after a
crash the node's memory is gone anyway and the store's unique ids take over). Bounding by age,
not only by count, makes memory plateau within `ttl_s` at any call rate; a count bound alone
kept growing for 12 minutes at 20 calls/s before it reached its cap.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable


class RecentIds:
    __slots__ = ("_ids", "_now", "max_n", "ttl_s")

    def __init__(self, ttl_s: float, max_n: int, now: Callable[[], float]) -> None:
        self.ttl_s = ttl_s
        self.max_n = max_n
        self._now = now
        self._ids: OrderedDict[str, float] = OrderedDict()  # id -> when first seen, oldest first

    def __contains__(self, id_: str) -> bool:
        return id_ in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, id_: str) -> bool:
        """Remember `id_`; False if it was already there (a duplicate)."""
        if id_ in self._ids:
            return False
        now = self._now()
        ids = self._ids
        ids[id_] = now
        horizon = now - self.ttl_s
        while ids and (len(ids) > self.max_n or next(iter(ids.values())) < horizon):
            ids.popitem(last=False)
        return True
