"""Agent selection strategies: each is a sort key (smaller = offered first) plus its explanation.

The engine keeps the free agents of each queue in a heap ordered by this key, so
choosing an agent is a pop, not a scan of every agent.
"""

from __future__ import annotations

from typing import Any

LONGEST_IDLE = "longest_idle"
FEWEST_CALLS = "fewest_calls"
ROUND_ROBIN = "round_robin"
RING_ALL = "ring_all"
LINEAR = "linear"
BEST_SKILL = "best_skill"

STRATEGIES = frozenset({LONGEST_IDLE, FEWEST_CALLS, ROUND_ROBIN, RING_ALL, LINEAR, BEST_SKILL})


def sort_key(strategy: str, *, idle_since: float, calls: int, last_offer: int, order: int,
             skill: int) -> tuple[Any, ...]:
    """The heap key of one agent in one queue (ties broken by configuration order)."""
    if strategy == LONGEST_IDLE:
        return (idle_since, order)
    if strategy == FEWEST_CALLS:
        return (calls, idle_since, order)
    if strategy == ROUND_ROBIN:
        # "round robin with memory": the agent this queue offered a call to longest ago
        return (last_offer, order)
    if strategy == BEST_SKILL:
        return (-skill, idle_since, order)
    # linear (hunt order) and ring_all: configuration order
    return (order,)


def score_parts(strategy: str, *, now: float, idle_since: float, calls: int, last_offer: int, order: int,
                skill: int) -> tuple[float, dict[str, float]]:
    """(headline score, parts) recorded in a Decision for each candidate: bigger score = better."""
    idle = round(max(0.0, now - idle_since), 3)
    parts = {"idle_s": idle, "calls": float(calls), "skill": float(skill), "order": float(order)}
    if strategy == LONGEST_IDLE:
        score = idle
    elif strategy == FEWEST_CALLS:
        score = -float(calls)
    elif strategy == ROUND_ROBIN:
        parts["last_offer"] = float(last_offer)
        score = -float(last_offer)
    elif strategy == BEST_SKILL:
        score = float(skill)
    else:
        score = -float(order)
    return score, parts
