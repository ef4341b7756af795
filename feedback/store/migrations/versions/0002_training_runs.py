"""training runs and the validations each took in

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "training_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("started_at", UTC_DATETIME, nullable=True),
        sa.Column("finished_at", UTC_DATETIME, nullable=True),
        sa.Column("target", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("active", sa.Integer(), nullable=True),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("validation_cutoff_id", ID, nullable=False),
        sa.Column("validated_photos", sa.Integer(), nullable=False),
        sa.Column("new_validated_photos", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(64), nullable=True),
        sa.Column("steps_done", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("process_started", sa.Float(), nullable=True),
        sa.Column("log_uri", sa.String(1024), nullable=True),
        sa.Column("remote_id", sa.String(512), nullable=True),
        sa.Column("console_url", sa.String(1024), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("promoted", sa.Boolean(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("champion_version", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.UniqueConstraint("active", name="uq_training_runs_active"),
    )
    op.create_index("ix_training_runs_created_at", "training_runs", ["created_at"])
    op.create_index("ix_training_runs_state", "training_runs", ["state"])
    op.create_table(
        "run_validations",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("training_runs.id"), primary_key=True),
        sa.Column("validation_id", ID, sa.ForeignKey("validations.id"), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("run_validations")
    op.drop_table("training_runs")
