"""Date each activity with the call's start, not with its push to the CRM.

An activity carried no time of the call, so the connectors dated the CRM record at the
push: after a CRM outage of hours, calls landed in the customer's history at the time of
the retry, out of order. `activities.started_at` keeps when the call started (the call's
`created_at`); rows written before this revision get it from their call when the call is
still stored, and otherwise fall back to the row's own `created_at` when read.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("activities", sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
    # activities still waiting for the CRM (an outage in progress) are pushed with the right time
    op.execute(
        "UPDATE activities SET started_at = "
        "(SELECT calls.created_at FROM calls WHERE calls.call_id = activities.call_id) "
        "WHERE started_at IS NULL"
    )


def downgrade() -> None:
    op.drop_column("activities", "started_at")
