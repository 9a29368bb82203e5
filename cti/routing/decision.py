"""Explainable routing decisions: who was considered, who was chosen, and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Candidate:
    agent: str
    score: float
    parts: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "score": self.score, "parts": dict(self.parts)}


@dataclass(frozen=True, slots=True)
class Decision:
    """One routing step for one call.

    action: offer | callback_dial | widen | overflow_voicemail | overflow_queue | callback_offer |
            closed | queue_full | rejected
    """

    call_id: str
    tenant: str
    queue: str | None
    decided_at: float            # epoch seconds
    action: str
    chosen: str | None
    reason: str
    strategy: str | None = None
    priority: int = 0
    rules: tuple[str, ...] = ()
    candidates: tuple[Candidate, ...] = ()
    wait_s: float = 0.0

    @property
    def decided_at_dt(self) -> datetime:
        return datetime.fromtimestamp(self.decided_at, UTC)

    def to_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "tenant": self.tenant,
            "queue": self.queue,
            "decided_at": self.decided_at_dt.isoformat(),
            "action": self.action,
            "chosen": self.chosen,
            "reason": self.reason,
            "strategy": self.strategy,
            "priority": self.priority,
            "rules": list(self.rules),
            "wait_s": self.wait_s,
            "candidates": [c.to_dict() for c in self.candidates],
        }

    def to_row(self) -> dict[str, Any]:
        """A row for the `routing_decisions` table (action and rules are spelled in `reason`)."""
        return {
            "call_id": self.call_id,
            "tenant": self.tenant,
            "queue": self.queue,
            "decided_at": self.decided_at_dt,
            "chosen": self.chosen,
            "reason": self.reason,
            "candidates": [c.to_dict() for c in self.candidates],
        }
