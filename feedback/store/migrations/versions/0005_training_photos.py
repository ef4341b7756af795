"""training photos the label-issues step flagged, and the label overrides each run took in

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

Two new tables (feedback/store/tables.py): training_photos (one row per imported training photo,
with its card's prediction) and run_overrides (run, photo, label). Existing rows are untouched:
a training photo's verdicts are ordinary validations.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "training_photos",
        sa.Column("sha256", sa.String(64), sa.ForeignKey("photos.sha256"), primary_key=True),
        sa.Column("prediction_id", sa.String(32), sa.ForeignKey("predictions.id"), nullable=False),
        sa.Column("given_label", sa.String(64), nullable=False),
        sa.Column("source", sa.String(1024), nullable=False),
        sa.Column("split", sa.String(16), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("flagged_by_run", sa.String(128), nullable=True),
        sa.Column("registry_version", sa.Integer(), nullable=True),
        sa.Column("suspects_uri", sa.String(1024), nullable=False),
        sa.Column("imported_at", sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb"),
                  nullable=False),
        sa.UniqueConstraint("prediction_id", name="uq_training_photos_prediction"),
    )
    op.create_table(
        "run_overrides",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("training_runs.id"), primary_key=True),
        sa.Column("photo_sha256", sa.String(64), sa.ForeignKey("photos.sha256"), primary_key=True),
        sa.Column("label", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("run_overrides")
    op.drop_table("training_photos")
