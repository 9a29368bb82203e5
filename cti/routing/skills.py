"""Pure skill matching and scoring."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from cti.routing.expr import Expr


def matches(requirement: Expr, skills: Mapping[str, int]) -> bool:
    """Does an agent with `skills` meet the requirement? (missing skill = level 0)"""
    return bool(requirement(skills))


def skill_score(skills: Mapping[str, int], names: Iterable[str]) -> int:
    """Sum of the agent's levels in the skills a queue asks about (best_skill ranks by it)."""
    return sum(int(skills.get(n, 0) or 0) for n in names)
