"""The experimenter's note when excluding a session on the dashboard.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("participant_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("exclusion_reason", sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("participant_sessions", schema=None) as batch_op:
        batch_op.drop_column("exclusion_reason")
