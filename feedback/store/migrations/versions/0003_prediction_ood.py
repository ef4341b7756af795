"""the predictor's out-of-distribution score, flag and threshold on each prediction

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

Nullable columns: predictions stored before (and by models exported before the score existed)
keep NULL. A "neither" verdict needs no schema change (validations.label and photos.label hold it).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("ood_score", sa.Float(), nullable=True))
        batch.add_column(sa.Column("neither", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("ood_threshold", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("ood_threshold")
        batch.drop_column("neither")
        batch.drop_column("ood_score")
