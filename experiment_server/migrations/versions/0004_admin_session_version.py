"""Each admin's session version: logging out or changing the password ends every session of that admin.
The generated cookie-signing key leaves the database (a copy of the database must not be an admin login).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("admins", schema=None) as batch_op:
        batch_op.add_column(sa.Column("session_version", sa.Integer(), nullable=False, server_default="0"))
    op.execute("DELETE FROM app_settings WHERE key = 'secret_key'")


def downgrade() -> None:
    with op.batch_alter_table("admins", schema=None) as batch_op:
        batch_op.drop_column("session_version")
