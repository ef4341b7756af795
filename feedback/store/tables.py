"""The store's tables (SQLAlchemy 2 typed models); Alembic migrations in feedback/store/migrations create them.

- photos: one row per distinct photo (by SHA-256): stored once however often it is uploaded.
  `label` is the consensus of its reviewers (feedback/labelling/consensus.py: each reviewer's
  latest verdict, majority wins; None until someone validated it, and None again while the
  reviewers tie), `reviewers` how many people judged it, `contested` whether their latest
  verdicts differ (a tie included); all three are written with every verdict, under the photo's
  row lock. `published_label` is the class folder of the feedback dataset that holds it now; they
  differ only between a validation's commit and the file move that follows (repaired at start-up).
- predictions: every answer of the predictor for an uploaded photo, with the model that gave it
  (source page or api), or for a photo sent straight to the serving endpoint (source endpoint:
  KServe's payload logger, with the InferenceService and the events' id).
- validations: every verdict, in order; a later correction is a new row (the history is kept:
  a reviewer's latest verdict counts, and the consensus is copied into photos.label in the same
  transaction). `reviewer` is who, compared: by_name trimmed and case-folded, "anonymous" without one.
A prediction's status derives from its photo's verdict: unvalidated (none yet), unresolved (its
reviewers tie: no label, not used for training), confirmed (the
verdict is the predicted label), corrected (another label) or neither (the verdict NEITHER: the
photo is neither of the labels; such a photo is never in the feedback dataset, and
published_label NEITHER records that its dataset files were removed).
- training_photos: photos of the CHAMPION's run's training data that the label-issues step flagged
  (feedback/labelling/training_photos.py imports them). Each has a photos row (its bytes copied
  into the photo store like an upload), one prediction with source "training" (label = the given
  label, probabilities = the out-of-sample ones: the card, heat map and buttons of an upload), and
  its verdicts are validations like any. Such a photo is never published to the feedback dataset:
  its verdict becomes a label override instead (<FEEDBACK_URI>/label-overrides.json).
- run_overrides: the label overrides a run took in (the training photos' labels when it started).
Out-of-distribution: predictions.ood_score and predictions.neither are what the predictor said
(KServe V1 `ood_score`/`neither`), ood_threshold the model's threshold when the predictor's
metadata gave it; all three are NULL for models exported before the score existed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SHA256_LENGTH = 64
LABEL_LENGTH = 64
NAME_LENGTH = 100
REVIEWER_LENGTH = 3 * NAME_LENGTH  # a case-folded name can grow (the German sharp s folds to "ss")
NOTE_LENGTH = 1000
EVENT_ID_LENGTH = 128
NEITHER = "neither"  # the verdict "neither a cat nor a dog": accepted besides LABELS, never a class folder
Status = Literal["unvalidated", "confirmed", "corrected", "neither", "unresolved"]
STATUSES: tuple[Status, ...] = get_args(Status)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend: stored as naive UTC (microseconds kept on
    MySQL/MariaDB, whose DATETIME drops them by default), read back with tzinfo=UTC."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware (UTC) datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect):
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Photo(Base):
    __tablename__ = "photos"

    sha256: Mapped[str] = mapped_column(String(SHA256_LENGTH), primary_key=True)
    format: Mapped[str] = mapped_column(String(8))  # by content: JPEG, PNG, WEBP, BMP, GIF
    width: Mapped[int]
    height: Mapped[int]
    size_bytes: Mapped[int]
    uri: Mapped[str] = mapped_column(String(1024))  # the original, under <FEEDBACK_URI>/photos/
    original_name: Mapped[str | None] = mapped_column(String(255))  # as the client sent it; never a path
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    label: Mapped[str | None] = mapped_column(String(LABEL_LENGTH), index=True)
    published_label: Mapped[str | None] = mapped_column(String(LABEL_LENGTH))
    reviewers: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    contested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    predictions: Mapped[list[Prediction]] = relationship(back_populates="photo")


class Prediction(Base):
    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("event_id", "event_index", name="uq_predictions_event"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    photo_sha256: Mapped[str] = mapped_column(ForeignKey("photos.sha256"), index=True)
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str | None] = mapped_column(String(128), index=True)
    label: Mapped[str] = mapped_column(String(LABEL_LENGTH))
    confidence: Mapped[float] = mapped_column(Float, index=True)  # the predicted label's probability
    probabilities: Mapped[dict[str, Any]]
    latency_ms: Mapped[float] = mapped_column(Float)  # the predictor's answer, as the app waited for it
    explanation: Mapped[dict[str, Any] | None]  # what :explain returned besides the prediction
    source: Mapped[str] = mapped_column(String(16))  # page or api
    ood_score: Mapped[float | None] = mapped_column(Float)  # the predictor's out-of-distribution score
    neither: Mapped[bool | None] = mapped_column(Boolean)  # the predictor flagged it as neither label
    ood_threshold: Mapped[float | None] = mapped_column(Float)  # the model's flag threshold, when known
    # the model's embedding of the photo (float32 bytes, catdog.model.FeatureEmbedding; NULL for models
    # without it): the diverse review order spreads the queue over it (feedback/labelling/review_order.py)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    # source "endpoint" (KServe payload logger, feedback/labelling/endpoint_events.py): the InferenceService, and
    # the events' ce-id with the instance's place in the batch (unique: a resent pair is stored once)
    inference_service: Mapped[str | None] = mapped_column(String(253))
    event_id: Mapped[str | None] = mapped_column(String(EVENT_ID_LENGTH))
    event_index: Mapped[int | None]

    photo: Mapped[Photo] = relationship(back_populates="predictions", lazy="joined")
    # a training photo's card (tables.TrainingPhoto); None for every other prediction (set so on creation)
    training: Mapped[TrainingPhoto | None] = relationship(back_populates="prediction", lazy="joined")

    @property
    def status(self) -> Status:
        verdict = self.photo.label
        if verdict is None:
            return "unresolved" if self.photo.reviewers else "unvalidated"
        return NEITHER if verdict == NEITHER else "confirmed" if verdict == self.label else "corrected"


class Validation(Base):
    __tablename__ = "validations"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    photo_sha256: Mapped[str] = mapped_column(ForeignKey("photos.sha256"), index=True)
    prediction_id: Mapped[str | None] = mapped_column(ForeignKey("predictions.id"), index=True)
    label: Mapped[str] = mapped_column(String(LABEL_LENGTH))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    by_name: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    # consensus.reviewer_key(by_name); written with every verdict (nullable only for the migration's sake: 0006)
    reviewer: Mapped[str | None] = mapped_column(String(REVIEWER_LENGTH), index=True)
    note: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))  # page, api or upload-data


RunState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
RUN_STATES: tuple[RunState, ...] = get_args(RunState)
ACTIVE_STATES: tuple[RunState, ...] = ("queued", "running")


class TrainingRun(Base):
    """One retraining run the app started (on TARGET local, kubeflow or vertex).

    `active` is 1 while the run is queued or running and NULL after: a unique column, so the
    database itself refuses a second active run, across app restarts and replicas (every
    backend allows many NULLs in a unique column).
    """

    __tablename__ = "training_runs"
    __table_args__ = (UniqueConstraint("active", name="uq_training_runs_active"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    target: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str] = mapped_column(String(16))  # manual or automatic
    state: Mapped[str] = mapped_column(String(16), index=True)
    active: Mapped[int | None] = mapped_column(Integer)
    parameters: Mapped[dict[str, Any]]  # the overrides given (the full config is in the log / remote UI)
    validation_cutoff_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    validated_photos: Mapped[int]  # photos with a verdict when the run started (run_validations)
    new_validated_photos: Mapped[int]  # of which validated since the previous run's cutoff
    step: Mapped[str | None] = mapped_column(String(64))  # the pipeline step running now
    steps_done: Mapped[int] = mapped_column(default=0)
    # local runs: the process, the host it runs on, its log and result files
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None]
    process_started: Mapped[float | None] = mapped_column(Float)  # psutil create_time: a reused pid is not ours
    log_uri: Mapped[str | None] = mapped_column(String(1024))
    # remote runs: the KFP run id or the Vertex PipelineJob resource name, and its console page
    remote_id: Mapped[str | None] = mapped_column(String(512))
    console_url: Mapped[str | None] = mapped_column(String(1024))
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    promoted: Mapped[bool | None]
    version: Mapped[int | None]  # the registry version the run registered
    champion_version: Mapped[int | None]  # the champion after the run's decision
    reason: Mapped[str | None] = mapped_column(Text)  # the champion decision, or why the run failed


class RunValidation(Base):
    """The verdicts a run took in: each validated photo's latest validation when the run started."""

    __tablename__ = "run_validations"

    run_id: Mapped[str] = mapped_column(ForeignKey("training_runs.id"), primary_key=True)
    validation_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                               ForeignKey("validations.id"), primary_key=True)


TRAINING_SOURCE = "training"  # predictions.source of a training photo's card
SOURCE_LENGTH = 1024


class TrainingPhoto(Base):
    """A training photo whose label may be wrong (the label-issues step of run `flagged_by_run`)."""

    __tablename__ = "training_photos"
    __table_args__ = (UniqueConstraint("prediction_id", name="uq_training_photos_prediction"),)

    sha256: Mapped[str] = mapped_column(ForeignKey("photos.sha256"), primary_key=True)
    prediction_id: Mapped[str] = mapped_column(ForeignKey("predictions.id"))
    given_label: Mapped[str] = mapped_column(String(LABEL_LENGTH))
    source: Mapped[str] = mapped_column(String(SOURCE_LENGTH))  # path relative to the data source
    split: Mapped[str] = mapped_column(String(16))
    reasons: Mapped[list[Any]] = mapped_column(JSON)  # of "label", "near-duplicate", "outlier"
    details: Mapped[dict[str, Any]]  # rank, label_quality, outlier_score, duplicates ([{sha256, similarity, label, prediction_id}])
    flagged_by_run: Mapped[str | None] = mapped_column(String(128))
    registry_version: Mapped[int | None]
    suspects_uri: Mapped[str] = mapped_column(String(1024))
    imported_at: Mapped[datetime] = mapped_column(default=utcnow)

    prediction: Mapped[Prediction] = relationship(back_populates="training")


class RunOverride(Base):
    """The label overrides a run took in: each training photo's label when it started (None: unresolved, not taken)."""

    __tablename__ = "run_overrides"

    run_id: Mapped[str] = mapped_column(ForeignKey("training_runs.id"), primary_key=True)
    photo_sha256: Mapped[str] = mapped_column(ForeignKey("photos.sha256"), primary_key=True)
    label: Mapped[str] = mapped_column(String(LABEL_LENGTH))
