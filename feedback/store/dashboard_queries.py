"""The monitoring dashboard's queries: aggregates over predictions and verdicts, plain functions
over a SQLAlchemy Session (the caller owns the read transaction: feedback.monitoring.dashboard).

A "judged" prediction is one whose photo has a verdict of one of the labels: NEITHER verdicts are
left out of accuracy and the confidence histogram (they are no wrong cat/dog prediction) and
counted by neither_counts instead. Model versions come back in the database's order; the
dashboard sorts them. Training photos' cards (source "training": out-of-sample probabilities of the
label-issues step, no model's answer) are in none of these numbers.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from feedback.store.tables import NEITHER, TRAINING_SOURCE, Photo, Prediction, utcnow

_served = Prediction.source != TRAINING_SOURCE  # a model's answer (not a training photo's card)
_judged = Photo.label.is_not(None) & (Photo.label != NEITHER) & _served  # a verdict of one of the labels


def predictions_per_day(session: Session, days: int, now: datetime | None = None) -> list[dict]:
    """Predictions per UTC date of the last `days` days (today included), days with none left out."""
    first = ((now or utcnow()) - timedelta(days=days - 1)).date()
    day = func.date(Prediction.created_at)  # stored as UTC: the UTC date
    rows = session.execute(select(day, func.count()).where(Prediction.created_at >= datetime.combine(first, time.min, UTC), _served)
                           .group_by(day).order_by(day))
    return [{"date": str(date)[:10], "count": int(count)} for date, count in rows]


def judged_per_version(session: Session) -> list[tuple[str | None, int, int]]:
    """(model version, confirmed, judged) per model version: its predictions whose photo has a
    verdict of one of the labels, and how many of those the verdict confirmed."""
    confirmed = func.sum(case((Photo.label == Prediction.label, 1), else_=0))
    rows = session.execute(select(Prediction.model_version, confirmed, func.count()).join(Prediction.photo)
                           .where(_judged).group_by(Prediction.model_version))
    return [(version, int(right), int(n)) for version, right, n in rows]


def neither_counts(session: Session) -> list[tuple[str | None, int, int, int, int, int, int]]:
    """(model version, predictions, scored (with an ood score), flagged (the model's neither flag),
    validated, neither (people's verdict), flagged_neither) per model version."""
    def count(condition):
        return func.sum(case((condition, 1), else_=0))

    flagged = Prediction.neither.is_(True)
    rows = session.execute(select(
        Prediction.model_version, func.count(), count(Prediction.neither.is_not(None)), count(flagged),
        count(Photo.label.is_not(None)), count(Photo.label == NEITHER), count(and_(flagged, Photo.label == NEITHER)),
    ).join(Prediction.photo).where(_served).group_by(Prediction.model_version))
    return [(version, int(n), *(int(value or 0) for value in counts)) for version, n, *counts in rows]


def judged_confidences(session: Session) -> list[tuple[float, str, str]]:
    """(confidence, predicted label, verdict) of every judged prediction."""
    return [tuple(row) for row in session.execute(
        select(Prediction.confidence, Prediction.label, Photo.label).join(Prediction.photo).where(_judged))]


def recent_predictions(session: Session, model_version: str, limit: int) -> list[tuple]:
    """(label, confidence, created_at) of the version's `limit` newest predictions, newest first."""
    return [tuple(row) for row in session.execute(
        select(Prediction.label, Prediction.confidence, Prediction.created_at)
        .where(Prediction.model_version == model_version)
        .order_by(Prediction.created_at.desc(), Prediction.id.desc()).limit(limit))]
