"""Several reviewers in the store: the consensus written with each verdict, the second-opinion
queue, and the votes the agreement figures are computed from. Plain functions over a Session;
the callers own the transactions (nothing here commits).

(The consensus itself is written by queries.add_validation, with the photo's row locked.)
- second_opinion_queue(session, reviewer, threshold): the photos a reviewer has not judged yet
  that need another opinion: contested ones (the reviewers' latest verdicts differ, a tie
  included) and ones a single person judged while the model's confidence (its newest prediction)
  was below `threshold` (the SECOND_OPINION_CONFIDENCE setting). Order: ties first (unresolved,
  not used for training), then contested photos that have a majority, then the single-reviewer
  ones; least confident first within each, then oldest prediction, then id. Each photo once.
- votes(session): (photo, reviewer, verdict) of every verdict, oldest first.
- latest_vote(session, photo, reviewer): that reviewer's latest verdict on the photo (upload-data
  records a person's vote unless it is already theirs).
"""

from __future__ import annotations

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from feedback.store.queries import _LEAST_CONFIDENT, _filtered
from feedback.store.tables import Photo, Prediction, Validation


def _needs_second_opinion(reviewer: str, threshold: float):
    judged_by_them = select(Validation.id).where(Validation.photo_sha256 == Photo.sha256,
                                                 Validation.reviewer == reviewer).exists()
    wanted = Photo.contested.is_(True) | ((Photo.reviewers == 1) & (Prediction.confidence < threshold))
    return wanted & ~judged_by_them


def _query(columns, reviewer: str, threshold: float):
    query = _filtered(select(*columns).join(Prediction.photo), None, None, True, None)  # newest prediction per photo
    return query.where(_needs_second_opinion(reviewer, threshold))


SECOND_OPINION_ORDER = (case((Photo.label.is_(None), 0), (Photo.contested.is_(True), 1), else_=2), *_LEAST_CONFIDENT)


def second_opinion_queue(session: Session, reviewer: str, threshold: float, limit: int) -> list[Prediction]:
    """Up to `limit` photos (their newest prediction) that `reviewer` (a consensus.reviewer_key) has
    not judged and that need a second opinion, in SECOND_OPINION_ORDER."""
    return list(session.scalars(_query([Prediction], reviewer, threshold).order_by(*SECOND_OPINION_ORDER).limit(limit)))


def second_opinion_length(session: Session, reviewer: str, threshold: float) -> int:
    return session.scalar(select(func.count()).select_from(_query([Prediction.id], reviewer, threshold).subquery())) or 0


def votes(session: Session) -> list[tuple[str, str, str]]:
    """(photo sha256, reviewer, verdict) of every verdict, oldest first."""
    return [tuple(row) for row in session.execute(
        select(Validation.photo_sha256, Validation.reviewer, Validation.label).order_by(Validation.id))]


def latest_vote(session: Session, sha256: str, reviewer: str) -> str | None:
    """The latest verdict of `reviewer` (a consensus.reviewer_key) on the photo; None without one."""
    return session.scalar(select(Validation.label).where(Validation.photo_sha256 == sha256,
                                                         Validation.reviewer == reviewer)
                          .order_by(Validation.id.desc()).limit(1))
