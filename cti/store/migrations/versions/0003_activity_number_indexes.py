"""Index the queries that run all day: last calls, CRM pushes pending, open spells and calls.

- The screen pop's last-calls query matches a customer by number or contact id
  (`from_number IN ... OR to_number IN ... OR contact_id IN ...`); only contact_id had an
  index, so every pop scanned the whole activity history, a cost that grows with every call.
- The CRM retry loop asks every second for activities the CRM does not have yet
  (`crm_synced_at IS NULL`): a partial index holds only those, so the question costs what is
  pending, not what was ever pushed.
- Each agent state change closes the agent's open spell (`agent = ... AND ended_at IS NULL`);
  the (agent, started_at) index walked every spell the agent ever had. A partial index holds
  the open spells only (by agent and start, as the update asks).
- Every socket connect reads the agent's calls in progress; `ix_calls_agent` walked every
  call the agent ever took. A partial index holds the calls in progress only.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f("ix_activities_from_number"), "activities", ["from_number"], unique=False)
    op.create_index(op.f("ix_activities_to_number"), "activities", ["to_number"], unique=False)
    pending = sa.text("crm_synced_at IS NULL")
    op.create_index("ix_activities_crm_pending", "activities", ["tenant", "updated_at"], unique=False,
                    postgresql_where=pending, sqlite_where=pending)
    open_call = sa.text("state != 'ended'")
    op.create_index("ix_calls_open_agent", "calls", ["agent"], unique=False,
                    postgresql_where=open_call, sqlite_where=open_call)
    open_spell = sa.text("ended_at IS NULL")
    op.create_index("ix_agent_state_log_open", "agent_state_log", ["agent", "started_at"], unique=False,
                    postgresql_where=open_spell, sqlite_where=open_spell)


def downgrade() -> None:
    op.drop_index("ix_agent_state_log_open", table_name="agent_state_log")
    op.drop_index("ix_calls_open_agent", table_name="calls")
    op.drop_index("ix_activities_crm_pending", table_name="activities")
    op.drop_index(op.f("ix_activities_to_number"), table_name="activities")
    op.drop_index(op.f("ix_activities_from_number"), table_name="activities")
