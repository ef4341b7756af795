"""predictions.embedding: the model's embedding of the photo, for the diverse review order

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

One nullable column: float32 little-endian bytes (catdog.model.FeatureEmbedding: 32 numbers, 128
bytes). Predictions stored before it, and those of models without the output, keep NULL; the
diverse order (feedback/labelling/review_order.py) puts such photos after those it can place.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("predictions", sa.Column("embedding", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    # SQLite too (3.35+ drops a column in place): a batch would copy the table, which the foreign keys
    # of validations.prediction_id refuse once verdicts exist
    op.drop_column("predictions", "embedding")
