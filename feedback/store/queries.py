"""The store's queries and writes: plain functions over a SQLAlchemy Session (feedback/store/tables.py).

The callers own the transactions (feedback/labelling/service.py); nothing here commits.
The review queue's order (review_queue; feedback.settings.REVIEW_ORDERS, the REVIEW_ORDER setting):
least_confident (smallest confidence first), newest, ood_first (photos the model flagged as neither
first, then the highest ood_score; predictions without a score last), training_suspects_first
(training photos whose label may be wrong first, feedback/store/training_queries.py), random (a
shuffle of the queue by a caller's seed: the same seed gives the same order, on every database) and
diverse (the DIVERSE_POOL x limit least confident queued photos, then farthest-first over the
model's embedding, catdog.diversity.k_center_greedy, starting from the photos people already judged:
one page does not spend its verdicts on near-copies. Embeddings of different model versions are not
comparable: it places the photos of the model version most of the pool has, from the judged photos
of that version; photos without an embedding (older models, older rows) follow in least-confident order).
A photo whose verdict is NEITHER is validated but belongs to no class: it is in no status but
"neither", and never in the manifest; "unpublished" holds it until its dataset files are removed
(published_label becomes NEITHER), so repair finishes that removal like any other move; so does a
photo whose reviewers now tie (label None, unresolved) while a dataset file of it is published.
Statuses "unvalidated" (nobody judged it: the review queue) and "unresolved" (judged, tied) both
have no label; photos.reviewers tells them apart.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import case, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from catdog.diversity import k_center_greedy
from catdog.preprocessing import EXTENSIONS
from feedback.labelling.consensus import consensus, reviewer_key
from feedback.settings import ReviewOrder
from feedback.store.photos import CheckedPhoto
from feedback.store.tables import NEITHER, STATUSES, TRAINING_SOURCE, Photo, Prediction, TrainingPhoto, Validation, utcnow

if TYPE_CHECKING:  # the type only: the store needs no HTTP client at run time
    from feedback.predictor_client.client import PredictorAnswer

# validated photos whose dataset folder does not match their label yet; and unresolved photos (a
# tie: label None) whose dataset file is still there. Training photos are never published (their
# verdicts are label overrides: feedback/store/training_queries.py)
_not_training = Photo.sha256.not_in(select(TrainingPhoto.sha256))
_unpublished = ((Photo.label.is_not(None) & or_(Photo.published_label.is_(None), Photo.published_label != Photo.label)
                 | Photo.label.is_(None) & Photo.published_label.is_not(None) & (Photo.published_label != NEITHER))
                & _not_training)


def add_photo(session: Session, photo: CheckedPhoto, uri: str, original_name: str | None) -> Photo:
    """The photo's row, created on first sight; a concurrent insert of the same photo is tolerated."""
    existing = session.get(Photo, photo.sha256)
    if existing is not None:
        return existing
    row = Photo(sha256=photo.sha256, format=photo.header.format, width=photo.header.width,
                height=photo.header.height, size_bytes=len(photo.data), uri=uri,
                original_name=(original_name or None) and original_name[:255])
    try:
        with session.begin_nested():  # a savepoint: losing the race to another request is no error
            session.add(row)
    except IntegrityError:
        row = session.get(Photo, photo.sha256, populate_existing=True)
        if row is None:  # not the same photo inserted by another request: a real error
            raise
    return row


def add_prediction(session: Session, photo: Photo, answer: PredictorAnswer, source: str,
                   inference_service: str | None = None, event_id: str | None = None,
                   event_index: int | None = None) -> Prediction:
    """inference_service, event_id, event_index: a prediction made at the serving endpoint (source endpoint)."""
    prediction = Prediction(
        id=uuid.uuid4().hex, photo_sha256=photo.sha256, photo=photo, model_name=answer.model_name,
        model_version=answer.model_version, label=answer.label, confidence=answer.probabilities[answer.label],
        probabilities=answer.probabilities, latency_ms=answer.latency_s * 1000, explanation=answer.explanation,
        source=source, ood_score=answer.ood_score, neither=answer.neither, ood_threshold=answer.ood_threshold,
        embedding=None if answer.embedding is None else np.asarray(answer.embedding, "<f4").tobytes(),
        inference_service=inference_service, event_id=event_id, event_index=event_index, training=None,
    )
    session.add(prediction)
    session.flush()
    return prediction


def event_stored(session: Session, event_id: str) -> bool:
    """Whether predictions of this payload-logger event id are stored."""
    return session.scalar(select(Prediction.id).where(Prediction.event_id == event_id).limit(1)) is not None


def existing_photos(session: Session, sha256s: list[str]) -> set[str]:
    """Which of these photos have a row."""
    return set(session.scalars(select(Photo.sha256).where(Photo.sha256.in_(sha256s)))) if sha256s else set()


def lock_photo(session: Session, sha256: str) -> Photo:
    """The photo's row, locked until the transaction ends (FOR UPDATE; SQLite: its one writer) and
    read afresh: a copy loaded before the lock may be stale, and the ORM would then skip an
    UPDATE that "changes nothing". Raises NoResultFound for an unknown photo."""
    return session.execute(select(Photo).where(Photo.sha256 == sha256).with_for_update()
                           .execution_options(populate_existing=True)).scalar_one()


def add_validation(session: Session, sha256: str, label: str, source: str, by: str | None = None,
                   note: str | None = None, prediction_id: str | None = None) -> Validation:
    """Record a verdict and make the photo's label the consensus of its reviewers
    (feedback.labelling.consensus: each one's latest verdict, majority wins, a tie None). The photo
    row is locked first, so of two concurrent verdicts the one committed last is also the newest
    row, and it reads the other's: the consensus it writes counts both."""
    photo = lock_photo(session, sha256)
    validation = Validation(photo_sha256=sha256, prediction_id=prediction_id, label=label, by_name=by,
                            reviewer=reviewer_key(by), note=note, source=source, created_at=utcnow())
    session.add(validation)
    session.flush()
    rows = session.execute(select(Validation.reviewer, Validation.label)
                           .where(Validation.photo_sha256 == sha256).order_by(Validation.id)).all()
    result = consensus((reviewer, verdict) for reviewer, verdict in rows)
    photo.label, photo.reviewers, photo.contested = result.label, result.reviewers, result.contested
    session.flush()
    return validation


def get_prediction(session: Session, prediction_id: str) -> Prediction | None:
    return session.get(Prediction, prediction_id)


def _status_filter(status: str):
    return {
        "unvalidated": Photo.label.is_(None) & (Photo.reviewers == 0),
        "unresolved": Photo.label.is_(None) & (Photo.reviewers > 0),  # the reviewers tie
        "confirmed": Photo.label == Prediction.label,  # a prediction's label is never NEITHER
        # NULL != x is not true: unvalidated stay out
        "corrected": (Photo.label != Prediction.label) & (Photo.label != NEITHER),
        NEITHER: Photo.label == NEITHER,
    }[status]


def _filtered(query, status: str | None, model_version: str | None, latest_per_photo: bool, flagged: bool | None):
    if status is not None:
        query = query.where(_status_filter(status))
    if flagged is not None:
        query = query.where(Prediction.neither.is_(flagged))
    if model_version is not None:
        query = query.where(Prediction.model_version == model_version)
    if latest_per_photo:
        newer = aliased(Prediction)
        query = query.where(~select(newer.id).where(
            newer.photo_sha256 == Prediction.photo_sha256,
            or_(newer.created_at > Prediction.created_at,
                (newer.created_at == Prediction.created_at) & (newer.id > Prediction.id)),
        ).exists())
    return query


_LEAST_CONFIDENT = (Prediction.confidence.asc(), Prediction.created_at.asc(), Prediction.id)
_ORDERS = {
    "least_confident": _LEAST_CONFIDENT,
    "newest": (Prediction.created_at.desc(), Prediction.id.desc()),
    # CASE rather than NULLS LAST, which MariaDB does not have; a NULL neither is "not flagged"
    "ood_first": (case((Prediction.neither.is_(True), 0), else_=1), case((Prediction.ood_score.is_(None), 1), else_=0),
                  Prediction.ood_score.desc(), *_LEAST_CONFIDENT),
    # training photos the label-issues step flagged first (lowest out-of-sample probability of the
    # given label first), then the uploads, least confident first
    "training_suspects_first": (case((Prediction.source == TRAINING_SOURCE, 0), else_=1), *_LEAST_CONFIDENT),
}


def list_predictions(session: Session, status: str | None = None, model_version: str | None = None,
                     order: str = "newest", limit: int = 50, offset: int = 0,
                     latest_per_photo: bool = False, flagged: bool | None = None) -> list[Prediction]:
    """Predictions filtered by status, model version and the model's neither flag (True: flagged;
    False: scored and not flagged; predictions without a score match neither), in `order` (newest,
    least_confident, ood_first). least_confident puts the photos where a person's answer teaches
    the model most first; latest_per_photo shows a photo uploaded several times once (its newest
    prediction)."""
    if order not in _ORDERS:
        raise ValueError(f"unknown order {order!r}: one of {', '.join(_ORDERS)}")
    query = _filtered(select(Prediction).join(Prediction.photo), status, model_version, latest_per_photo, flagged)
    return list(session.scalars(query.order_by(*_ORDERS[order]).limit(limit).offset(offset)))


def review_queue(session: Session, limit: int = 50, order: ReviewOrder = "least_confident",
                 seed: int | None = None) -> list[Prediction]:
    """Photos nobody validated yet, each once (its newest prediction), in `order`; random needs
    `seed` and shuffles the whole queue's ids in Python (random.Random(seed): SQL's random() has no
    seed on SQLite, and differs per database), so it reads one id per queued photo."""
    if order == "diverse":
        return _diverse(session, limit)
    if order != "random":
        return list_predictions(session, status="unvalidated", order=order, limit=limit, latest_per_photo=True)
    if seed is None:
        raise ValueError("the random order needs a seed")
    ids = list(session.scalars(_filtered(select(Prediction.id).join(Prediction.photo), "unvalidated", None, True, None)
                               .order_by(Prediction.id)))
    random.Random(seed).shuffle(ids)
    chosen = ids[:limit]
    if not chosen:
        return []
    rows = {p.id: p for p in session.scalars(select(Prediction).where(Prediction.id.in_(chosen)))}
    return [rows[i] for i in chosen]


DIVERSE_POOL = 5  # the diverse order spreads a page over the 5 x limit least confident queued photos
DIVERSE_CENTRES = 5000  # at most this many judged photos' embeddings, the newest, are its starting centres


def _vectors(rows: list[bytes]) -> np.ndarray:
    return np.stack([np.frombuffer(row, "<f4") for row in rows]).astype(np.float64)


def _diverse(session: Session, limit: int) -> list[Prediction]:
    pool = list_predictions(session, status="unvalidated", order="least_confident", latest_per_photo=True,
                            limit=max(DIVERSE_POOL * limit, limit))
    versions = Counter(p.model_version for p in pool if p.embedding is not None)
    if not versions:
        return pool[:limit]
    version = versions.most_common(1)[0][0]
    placed = [p for p in pool if p.embedding is not None and p.model_version == version]
    size = Counter(len(p.embedding) for p in placed).most_common(1)[0][0]  # bytes: 4 a dimension
    placed = [p for p in placed if len(p.embedding) == size]
    judged = [row for row in session.scalars(
        select(Prediction.embedding).join(Prediction.photo)
        .where(Photo.reviewers > 0, Prediction.model_version == version, Prediction.embedding.is_not(None))
        .order_by(Prediction.created_at.desc()).limit(DIVERSE_CENTRES)) if len(row) == size]
    centres = _vectors(judged) if judged else np.zeros((0, size // 4))
    picks = k_center_greedy(_vectors([p.embedding for p in placed]), centres, limit)
    chosen = [placed[i] for i in picks]
    taken = {p.id for p in chosen}
    return (chosen + [p for p in pool if p.id not in taken])[:limit]


def queue_length(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Photo).where(
        Photo.label.is_(None), Photo.reviewers == 0, Photo.predictions.any())) or 0


def validations_of(session: Session, sha256: str) -> list[Validation]:
    return list(session.scalars(select(Validation).where(Validation.photo_sha256 == sha256).order_by(Validation.id)))


def model_versions(session: Session) -> list[str]:
    return list(session.scalars(select(Prediction.model_version).where(Prediction.model_version.is_not(None))
                                .distinct().order_by(Prediction.model_version)))


def counts(session: Session) -> dict:
    """Predictions by status, photos, and validated photos per label (NEITHER among them)."""
    statuses = {status: session.scalar(select(func.count()).select_from(Prediction).join(Prediction.photo)
                                       .where(_status_filter(status))) or 0
                for status in STATUSES}
    labels = dict(session.execute(select(Photo.label, func.count()).where(Photo.label.is_not(None))
                                  .group_by(Photo.label)).all())
    return {
        "predictions": sum(statuses.values()),
        **statuses,
        "photos": session.scalar(select(func.count()).select_from(Photo)) or 0,
        "validated_photos": labels,
        "review_queue": queue_length(session),
        "unpublished": session.scalar(select(func.count()).select_from(Photo).where(_unpublished)) or 0,
    }



def unpublished(session: Session) -> list[str]:
    """The SHA-256 of every validated photo whose dataset folder does not match its label yet."""
    return list(session.scalars(select(Photo.sha256).where(_unpublished)))


def latest_validation_id(session: Session) -> int:
    """The newest verdict's id (0 without any): what the manifest was written at."""
    return session.scalar(select(func.max(Validation.id))) or 0


def manifest_entries(session: Session) -> list[dict]:
    """One entry per photo in the dataset (validated, NEITHER excluded): its dataset file and where
    it came from (the latest verdict)."""
    latest = (select(func.max(Validation.id)).where(Validation.photo_sha256 == Photo.sha256)
              .correlate(Photo).scalar_subquery())
    rows = session.execute(
        select(Photo, Validation, Prediction)
        .join(Validation, Validation.id == latest)
        .outerjoin(Prediction, Prediction.id == Validation.prediction_id)
        .where(Photo.label.is_not(None), Photo.label != NEITHER, _not_training)
        .order_by(Photo.sha256)
    ).all()
    return [
        {
            "file": f"{photo.label}/{photo.sha256}{EXTENSIONS[photo.format]}",
            "label": photo.label,
            "sha256": photo.sha256,
            "format": photo.format,
            "width": photo.width,
            "height": photo.height,
            "original_name": photo.original_name,
            "first_seen": photo.created_at.isoformat(),
            "source": validation.source,
            "validated_at": validation.created_at.isoformat(),
            "validated_by": validation.by_name,
            "prediction_id": validation.prediction_id,
            "predicted_label": prediction.label if prediction else None,
            "model_version": prediction.model_version if prediction else None,
        }
        for photo, validation, prediction in rows
    ]
