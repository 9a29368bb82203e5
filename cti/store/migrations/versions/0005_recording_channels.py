"""Say who speaks on each channel of a stereo recording.

Transcription took the left channel for the agent. FreeSWITCH (`RECORD_STEREO`) and
Twilio (`RecordingChannels=dual`) put the recorded leg's own party first, which is the
customer on an inbound call: the agent's words were labelled as the customer's, and the
action items' owners swapped. `recordings.channels` keeps the order the provider reported
(`["customer", "agent"]`); NULL keeps the old default (left = agent).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("recordings", sa.Column("channels", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("recordings", "channels")
