"""Callback requests: a queued caller hangs up but keeps their place.

When the request reaches the head of the queue and an agent is free, the agent
is reserved and the router originates the call (agent first, then the
customer). A failed attempt is retried later, up to `max_attempts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cti.model import make_call_id

WAITING = "waiting"
DIALING = "dialing"
DONE = "done"
FAILED = "failed"


@dataclass(slots=True)
class CallbackRequest:
    id: str
    tenant: str
    queue: str
    number: str
    call_id: str            # the call that asked for it
    requested_at: float     # epoch seconds
    position_at: float      # the caller's original place in the queue (epoch seconds)
    state: str = WAITING
    attempts: int = 0
    done_call_id: str | None = None
    agent: str | None = None

    def next_call_id(self) -> str:
        """The id of the originated call for the next attempt (deterministic: retries dedupe)."""
        return make_call_id(self.tenant, "cti", f"callback:{self.id}:{self.attempts}")

    def to_row(self) -> dict[str, Any]:
        """A row for the `callbacks` table."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "queue": self.queue,
            "number": self.number,
            "call_id": self.call_id,
            "requested_at": datetime.fromtimestamp(self.requested_at, UTC),
            "position_at": datetime.fromtimestamp(self.position_at, UTC),
            "state": self.state,
            "done_call_id": self.done_call_id,
            "agent": self.agent,
        }
