"""Index agent_state_log by (agent, started_at) for time-per-state queries.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_agent_state_log_agent_started", "agent_state_log", ["agent", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_agent_state_log_agent_started", table_name="agent_state_log")
