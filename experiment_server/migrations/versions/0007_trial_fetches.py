"""When the server first served each main trial to a session (per-trial timing on the server's clock), and
a per-session count of stored events (the cap is checked by one conditional UPDATE, so concurrent batches
cannot overshoot it).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trial_fetches",
        sa.Column("session_id", sa.Integer, sa.ForeignKey("participant_sessions.id"), primary_key=True),
        sa.Column("trial_index", sa.Integer, primary_key=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("participant_sessions") as batch:
        batch.add_column(sa.Column("events_stored", sa.Integer, nullable=False, server_default="0"))
    op.execute(
        "UPDATE participant_sessions SET events_stored = "
        "(SELECT COUNT(*) FROM session_events WHERE session_events.session_id = participant_sessions.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("participant_sessions") as batch:
        batch.drop_column("events_stored")
    op.drop_table("trial_fetches")
