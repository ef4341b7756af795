"""The store's queries and writes on training photos (tables.TrainingPhoto) and the overrides runs
took in (tables.RunOverride); plain functions over a Session, the callers own the transactions.

THE one rule for what a verdict on a training photo means: its override label is its photo's
`label` (override_label). Photo.label is the latest verdict today; with several reviewers it is
their consensus, None while a tie leaves it unresolved; None is never an override.
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from feedback.store.tables import TRAINING_SOURCE, Photo, Prediction, RunOverride, TrainingPhoto, Validation

training_shas = select(TrainingPhoto.sha256)  # for "not a training photo" filters elsewhere


def override_label(photo: Photo) -> str | None:
    """A training photo's override label: a class, NEITHER, or None (no verdict, or unresolved)."""
    return photo.label


def is_training_photo(session: Session, sha256: str) -> bool:
    return session.get(TrainingPhoto, sha256) is not None


def add_training_photo(session: Session, photo: Photo, entry: dict, flagged_by_run: str | None,
                       registry_version: int | None, suspects_uri: str) -> TrainingPhoto:
    """The photo's card (a prediction with source "training": the given label and its out-of-sample
    probabilities) and its training_photos row, from a catdog.label_issues entry."""
    probabilities = {k: float(v) for k, v in entry["probabilities"].items()}
    given = entry["given_label"]
    prediction = Prediction(
        id=uuid.uuid4().hex, photo_sha256=photo.sha256, photo=photo, model_name="label-issues", model_version=None,
        label=given, confidence=probabilities.get(given, 0.0), probabilities=probabilities, latency_ms=0.0,
        explanation=None, source=TRAINING_SOURCE)
    session.add(prediction)
    row = TrainingPhoto(
        sha256=photo.sha256, prediction_id=prediction.id, given_label=given, source=entry["source"][:1024],
        split=entry.get("split", "")[:16], reasons=list(entry["reasons"]),
        details={"rank": entry.get("rank"), "label_quality": entry.get("label_quality"),
                 "outlier_score": entry.get("outlier_score"), "duplicates": list(entry.get("duplicates", []))},
        flagged_by_run=flagged_by_run, registry_version=registry_version, suspects_uri=suspects_uri)
    session.add(row)
    session.flush()
    return row


def link_duplicates(session: Session, sha256s: list[str]) -> None:
    """Give each near-duplicate partner of these training photos its card's prediction id (the card
    shows the pair side by side)."""
    rows = list(session.scalars(select(TrainingPhoto).where(TrainingPhoto.sha256.in_(sha256s))))
    partners = {d["sha256"] for r in rows for d in r.details.get("duplicates", [])}
    ids = dict(session.execute(select(TrainingPhoto.sha256, TrainingPhoto.prediction_id)
                               .where(TrainingPhoto.sha256.in_(partners))).all()) if partners else {}
    for row in rows:
        duplicates = [{**d, "prediction_id": ids.get(d["sha256"])} for d in row.details.get("duplicates", [])]
        if duplicates != row.details.get("duplicates", []):
            row.details = {**row.details, "duplicates": duplicates}


def current_overrides(session: Session) -> list[tuple[TrainingPhoto, Photo]]:
    """Every training photo whose override label is set (override_label), by sha256."""
    rows = session.execute(select(TrainingPhoto, Photo).join(Photo, Photo.sha256 == TrainingPhoto.sha256)
                           .order_by(TrainingPhoto.sha256)).all()
    return [(training, photo) for training, photo in rows if override_label(photo) is not None]


def override_entries(session: Session) -> list[dict]:
    """The entries of <FEEDBACK_URI>/label-overrides.json (catdog.label_overrides): each reviewer's
    latest verdict is listed; updated_at is the newest verdict's time."""
    entries = []
    for training, photo in current_overrides(session):
        verdicts = list(session.scalars(select(Validation).where(Validation.photo_sha256 == photo.sha256)
                                        .order_by(Validation.id)))
        latest: dict[str | None, Validation] = {}
        for verdict in verdicts:
            latest[verdict.by_name] = verdict
        entries.append({
            "sha256": photo.sha256, "source": training.source, "given_label": training.given_label,
            "label": override_label(photo),
            "reviewers": [{"by": v.by_name, "label": v.label, "at": v.created_at.isoformat()} for v in latest.values()],
            "flagged_by_run": training.flagged_by_run,
            "updated_at": max(v.created_at for v in verdicts).isoformat() if verdicts else None,
        })
    return entries


def training_photo_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(TrainingPhoto)) or 0


def record_run_overrides(session: Session, run_id: str) -> int:
    """Record the overrides a starting run takes in (run_overrides); returns how many."""
    rows = [RunOverride(run_id=run_id, photo_sha256=photo.sha256, label=override_label(photo))
            for _, photo in current_overrides(session)]
    session.add_all(rows)
    return len(rows)


def run_override_count(session: Session, run_id: str) -> int:
    return session.scalar(select(func.count()).select_from(RunOverride).where(RunOverride.run_id == run_id)) or 0


def run_overrides(session: Session, run_id: str) -> list[RunOverride]:
    return list(session.scalars(select(RunOverride).where(RunOverride.run_id == run_id)
                                .order_by(RunOverride.photo_sha256)))
