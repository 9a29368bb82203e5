"""Index activities by caller and callee number: the screen pop's last-calls query.

The query matches a customer by number or contact id (`from_number IN ... OR to_number IN ...
OR contact_id IN ...`); only contact_id had an index, so every pop scanned the whole activity
history, a cost that grows with every call taken.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f("ix_activities_from_number"), "activities", ["from_number"], unique=False)
    op.create_index(op.f("ix_activities_to_number"), "activities", ["to_number"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_activities_to_number"), table_name="activities")
    op.drop_index(op.f("ix_activities_from_number"), table_name="activities")
