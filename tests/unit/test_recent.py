"""RecentIds: the in-memory duplicate filters' memory plateaus by age at any rate."""

from __future__ import annotations

from cti.recent import RecentIds


def test_ids_are_forgotten_by_age_and_by_count() -> None:
    now = [0.0]
    seen = RecentIds(ttl_s=120, max_n=1000, now=lambda: now[0])
    assert seen.add("a") and not seen.add("a") and "a" in seen
    for i in range(100):  # 10 ids a second for 10 s
        now[0] += 0.1
        seen.add(f"e{i}")
    assert len(seen) == 101
    now[0] += 121  # two minutes later, the next id pushes out everything older
    assert seen.add("late")
    assert len(seen) == 1 and "a" not in seen and not seen.add("late")
    for i in range(5000):  # a burst: the count bound holds within the window
        seen.add(f"b{i}")
    assert len(seen) == 1000 and "b4999" in seen and "b0" not in seen
