"""predictions made at the serving endpoint (KServe payload logger): InferenceService and event id

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

Nullable columns (predictions of the app's own uploads keep NULL): inference_service, and
event_id + event_index, unique together, so a pair of logger events sent twice is stored once
(every backend allows many rows whose event_id is NULL). predictions.source keeps its width:
"endpoint" fits String(16).
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("inference_service", sa.String(253), nullable=True))
        batch.add_column(sa.Column("event_id", sa.String(128), nullable=True))
        batch.add_column(sa.Column("event_index", sa.Integer(), nullable=True))
        batch.create_unique_constraint("uq_predictions_event", ["event_id", "event_index"])


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_constraint("uq_predictions_event", type_="unique")
        batch.drop_column("event_index")
        batch.drop_column("event_id")
        batch.drop_column("inference_service")
