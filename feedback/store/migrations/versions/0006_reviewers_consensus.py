"""several reviewers: who judged (validations.reviewer), and each photo's consensus

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

validations.reviewer: by_name trimmed and case-folded, "anonymous" without one
(feedback.labelling.consensus.reviewer_key), filled for every existing verdict (the app writes it
with every new one; the column stays nullable: making it NOT NULL would copy the table on SQLite,
which run_validations' foreign key refuses), indexed. photos.reviewers and photos.contested (0 / false by default) and photos.label are
recomputed from every photo's verdicts by the same rule the app applies with each new verdict
(feedback.labelling.consensus): each reviewer's latest verdict, majority wins, a tie leaves the
label NULL. A database whose verdicts never named anyone keeps its labels (one reviewer,
"anonymous": the latest verdict). Dataset files follow at the app's start: its repair moves, or
removes, the files of photos whose label changed. Downgrade drops the columns and puts back the
old rule: the latest verdict is the label.

(Another branch adds 0005; the chain is re-linked when they are merged.)
"""

import sqlalchemy as sa
from alembic import op

from feedback.labelling.consensus import consensus, reviewer_key

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_validations = sa.table("validations", sa.column("id", sa.BigInteger), sa.column("photo_sha256", sa.String),
                        sa.column("by_name", sa.String), sa.column("label", sa.String),
                        sa.column("reviewer", sa.String))
_photos = sa.table("photos", sa.column("sha256", sa.String), sa.column("label", sa.String),
                   sa.column("reviewers", sa.Integer), sa.column("contested", sa.Boolean))


def _verdicts_per_photo(bind) -> dict[str, list[tuple[int, str | None, str]]]:
    rows = bind.execute(sa.select(_validations.c.id, _validations.c.photo_sha256, _validations.c.by_name,
                                  _validations.c.label).order_by(_validations.c.id))
    photos: dict[str, list] = {}
    for id_, sha256, by, label in rows:
        photos.setdefault(sha256, []).append((id_, by, label))
    return photos


def upgrade() -> None:
    # plain ADD COLUMNs (SQLite included): a batch would copy the tables, which other tables' foreign keys refuse
    op.add_column("photos", sa.Column("reviewers", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("photos", sa.Column("contested", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("validations", sa.Column("reviewer", sa.String(300), nullable=True))
    bind = op.get_bind()
    photos = _verdicts_per_photo(bind)
    reviewers = [{"v_id": id_, "v_reviewer": reviewer_key(by)} for verdicts in photos.values() for id_, by, _ in verdicts]
    if reviewers:
        bind.execute(_validations.update().where(_validations.c.id == sa.bindparam("v_id"))
                     .values(reviewer=sa.bindparam("v_reviewer")), reviewers)
    decided = []
    for sha256, verdicts in photos.items():
        result = consensus((by, label) for _, by, label in verdicts)
        decided.append({"p_sha": sha256, "p_label": result.label, "p_reviewers": result.reviewers,
                        "p_contested": result.contested})
    if decided:
        bind.execute(_photos.update().where(_photos.c.sha256 == sa.bindparam("p_sha"))
                     .values(label=sa.bindparam("p_label"), reviewers=sa.bindparam("p_reviewers"),
                             contested=sa.bindparam("p_contested")), decided)
    op.create_index("ix_validations_reviewer", "validations", ["reviewer"])


def downgrade() -> None:
    bind = op.get_bind()
    latest = [{"p_sha": sha256, "p_label": verdicts[-1][2]} for sha256, verdicts in _verdicts_per_photo(bind).items()]
    if latest:
        bind.execute(_photos.update().where(_photos.c.sha256 == sa.bindparam("p_sha"))
                     .values(label=sa.bindparam("p_label")), latest)
    op.drop_index("ix_validations_reviewer", "validations")
    for table, column in (("validations", "reviewer"), ("photos", "contested"), ("photos", "reviewers")):
        op.drop_column(table, column)  # SQLite too (3.35+): a batch would copy the tables
