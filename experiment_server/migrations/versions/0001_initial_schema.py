"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21 04:06:30.035577
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admins",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("password_hash", sa.String(length=300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "app_settings",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("value", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "studies",
        sa.Column("study_id", sa.String(length=200), nullable=False),
        sa.Column("assignments", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("study_id"),
    )
    op.create_table(
        "worker_group_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_group", sa.String(length=200), nullable=False),
        sa.Column("participant_id", sa.String(length=200), nullable=False),
        sa.Column("study_id", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("study_group", "participant_id", name="uq_group_participant"),
    )
    op.create_table(
        "participant_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("study_id", sa.String(length=200), nullable=False),
        sa.Column("task_id", sa.String(length=200), nullable=True),
        sa.Column("participant_id", sa.String(length=200), nullable=False),
        sa.Column("platform", sa.String(length=20), nullable=False),
        sa.Column("platform_study_id", sa.String(length=200), nullable=True),
        sa.Column("platform_session_id", sa.String(length=200), nullable=True),
        sa.Column("assignment_id", sa.String(length=200), nullable=True),
        sa.Column("hit_id", sa.String(length=200), nullable=True),
        sa.Column("turk_submit_to", sa.String(length=300), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("failure_reason", sa.String(length=40), nullable=True),
        sa.Column("excluded_by_experimenter", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reserved_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consent_version", sa.String(length=64), nullable=True),
        sa.Column("consented_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("instructions_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("practice_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("main_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("practice_blocks", sa.Integer(), nullable=False),
        sa.Column("practice_passed", sa.Boolean(), nullable=False),
        sa.Column("completion_code", sa.String(length=64), nullable=True),
        sa.Column("window_width", sa.Integer(), nullable=True),
        sa.Column("window_height", sa.Integer(), nullable=True),
        sa.Column("device_pixel_ratio", sa.Float(), nullable=True),
        sa.Column("user_agent", sa.String(length=400), nullable=True),
        sa.Column("feedback", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["studies.study_id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("study_id", "participant_id", name="uq_session_study_participant"),
    )
    with op.batch_alter_table("participant_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_participant_sessions_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_participant_sessions_study_id"), ["study_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_participant_sessions_task_id"), ["task_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_participant_sessions_token"), ["token"], unique=True)

    op.create_table(
        "responses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(length=10), nullable=False),
        sa.Column("block", sa.Integer(), nullable=False),
        sa.Column("trial_index", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.String(length=300), nullable=False),
        sa.Column("chosen_query", sa.Integer(), nullable=False),
        sa.Column("confidence", sa.Integer(), nullable=False),
        sa.Column("rt_ms", sa.Double(), nullable=False),
        sa.Column("correct", sa.Boolean(), nullable=False),
        sa.Column("focus_lost", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["participant_sessions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("session_id", "phase", "block", "trial_index", name="uq_response_session_trial"),
    )
    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_responses_session_id"), ["session_id"], unique=False)

    op.create_table(
        "session_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("client_ms", sa.Double(), nullable=False),
        sa.Column("detail", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["participant_sessions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("session_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_session_events_session_id"), ["session_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("session_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_session_events_session_id"))

    op.drop_table("session_events")
    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_responses_session_id"))

    op.drop_table("responses")
    with op.batch_alter_table("participant_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_participant_sessions_token"))
        batch_op.drop_index(batch_op.f("ix_participant_sessions_task_id"))
        batch_op.drop_index(batch_op.f("ix_participant_sessions_study_id"))
        batch_op.drop_index(batch_op.f("ix_participant_sessions_status"))

    op.drop_table("participant_sessions")
    op.drop_table("worker_group_members")
    op.drop_table("studies")
    op.drop_table("app_settings")
    op.drop_table("admins")
