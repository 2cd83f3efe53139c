"""When the server served each answered main trial (per-trial timing on the server's clock), and a
per-session count of stored events (the cap is checked by one conditional UPDATE, so concurrent batches
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
    with op.batch_alter_table("responses") as batch:
        batch.add_column(sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("participant_sessions") as batch:
        batch.add_column(sa.Column("events_stored", sa.Integer, nullable=False, server_default="0"))
    op.execute(
        "UPDATE participant_sessions SET events_stored = "
        "(SELECT COUNT(*) FROM session_events WHERE session_events.session_id = participant_sessions.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("participant_sessions") as batch:
        batch.drop_column("events_stored")
    with op.batch_alter_table("responses") as batch:
        batch.drop_column("fetched_at")
