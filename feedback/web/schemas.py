"""The REST API's request and response bodies (they make the OpenAPI document at /docs).

Text fields of requests refuse NUL characters (feedback.labelling.service.check_text: 422 on every
database); labels are normalised by feedback.labelling.service.normalise_label, as upload-data's are.
MAX_OFFSET bounds every list's `offset` (a 2**63 offset is a 422, not a database error).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, model_validator

from feedback.labelling.inputs import check_text, normalise_label
from feedback.store.tables import (
    NAME_LENGTH,
    NOTE_LENGTH,
    Prediction,
    RunState,
    Status,
    TrainingRun,
    Validation,
)

MAX_OFFSET = 10**9
NoNulText = Annotated[str, AfterValidator(lambda value: check_text(value, "the text"))]
Label = Annotated[str, AfterValidator(normalise_label)]


def _no_nul_anywhere(value: Any, where: str) -> None:
    """check_text on every string inside JSON-like `value` (keys included)."""
    if isinstance(value, str):
        check_text(value, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_nul_anywhere(key, where)
            _no_nul_anywhere(item, f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            _no_nul_anywhere(item, where)


class PhotoOut(BaseModel):
    sha256: str
    format: str
    width: int
    height: int
    size_bytes: int
    url: str = Field(description="the photo itself (GET)")


class ValidationOut(BaseModel):
    label: str
    at: datetime
    by: str | None
    note: str | None
    source: str

    @classmethod
    def of(cls, validation: Validation) -> ValidationOut:
        return cls(label=validation.label, at=validation.created_at, by=validation.by_name, note=validation.note,
                   source=validation.source)


class TrainingPhotoOut(BaseModel):
    """A training photo's card (source "training"): why the label-issues step flagged it."""

    given_label: str = Field(description="its label in the training data")
    source: str = Field(description="its path relative to the data source")
    reasons: list[str] = Field(description="label, near-duplicate and/or outlier")
    duplicates: list[dict] = Field(description="near-duplicate partners: sha256, similarity, label, prediction_id")
    label_quality: float | None = Field(None, description="out-of-sample probability of the given label")
    flagged_by_run: str | None
    registry_version: int | None = Field(None, description="the registry version of the run that flagged it")


class PredictionOut(BaseModel):
    id: str
    predicted_class: str
    confidence: float = Field(description="probability of predicted_class")
    probabilities: dict[str, float]
    model_name: str
    model_version: str | None
    prediction_time: float = Field(description="seconds the predictor took to answer")
    timestamp: datetime
    status: Status = Field(description="unvalidated, confirmed, corrected, or neither (a person said it is "
                           "none of the labels)")
    validated_label: str | None = Field(description="the latest verdict of a person on this photo")
    photo: PhotoOut
    explanation: dict | None = None
    ood_score: float | None = Field(None, description="the model's out-of-distribution score (higher: less like "
                                    "its training photos); null for models without one")
    neither: bool | None = Field(None, description="the model's flag: this photo may be neither label "
                                 "(its ood_score is past its threshold); null for models without one")
    ood_threshold: float | None = Field(None, description="the model's threshold on ood_score, when the "
                                        "predictor's metadata gave it")
    source: str = Field("api", description="where the photo came from: page, api, endpoint (sent straight "
                        "to the serving endpoint; KServe's payload logger), or training (a training photo whose "
                        "label may be wrong: `training` says why)")
    inference_service: str | None = Field(None, description="source endpoint: the InferenceService that answered")
    validations: list[ValidationOut] | None = Field(None, description="the photo's verdicts, oldest first "
                                                    "(single-prediction answers only)")
    training: TrainingPhotoOut | None = Field(None, description="source training: a training photo whose label "
                                              "may be wrong; a verdict on it becomes a label override")

    @classmethod
    def of(cls, prediction: Prediction, validations: list[Validation] | None = None) -> PredictionOut:
        photo = prediction.photo
        return cls(
            id=prediction.id, predicted_class=prediction.label, confidence=prediction.confidence,
            probabilities=prediction.probabilities, model_name=prediction.model_name,
            model_version=prediction.model_version, prediction_time=round(prediction.latency_ms / 1000, 6),
            timestamp=prediction.created_at, status=prediction.status, validated_label=photo.label,
            photo=PhotoOut(sha256=photo.sha256, format=photo.format, width=photo.width, height=photo.height,
                           size_bytes=photo.size_bytes, url=f"/api/predictions/{prediction.id}/photo"),
            explanation=prediction.explanation, ood_score=prediction.ood_score, neither=prediction.neither,
            ood_threshold=prediction.ood_threshold, source=prediction.source,
            inference_service=prediction.inference_service,
            validations=None if validations is None else [ValidationOut.of(v) for v in validations],
            training=None if prediction.training is None else TrainingPhotoOut(
                given_label=prediction.training.given_label, source=prediction.training.source,
                reasons=prediction.training.reasons, duplicates=prediction.training.details.get("duplicates", []),
                label_quality=prediction.training.details.get("label_quality"),
                flagged_by_run=prediction.training.flagged_by_run,
                registry_version=prediction.training.registry_version),
        )


class PredictionList(BaseModel):
    predictions: list[PredictionOut]
    count: int = Field(description="predictions in this answer")
    limit: int
    offset: int


class ReviewQueue(BaseModel):
    queue: str = Field("review", description="review, or second-opinion")
    length: int = Field(description="photos waiting for a verdict (second-opinion: for another one)")
    order: str = Field(description="the order of `predictions`: least_confident, random, ood_first, newest, "
                       "diverse or training_suspects_first; second_opinion for that queue")
    seed: int | None = Field(None, description="order=random: the shuffle's seed (give it back for the same order)")
    predictions: list[PredictionOut] = Field(description="in `order`, at most `limit`")


class ValidationIn(BaseModel):
    label: Label = Field(description="the right label, e.g. dog, or 'neither' for a photo of none of the labels "
                         "(kept out of the dataset; surrounding spaces are ignored)", max_length=64)
    by: NoNulText | None = Field(None, max_length=NAME_LENGTH, description="who says so: each person's latest verdict "
                                 "counts toward the photo's consensus; required when the app has an APP_TOKEN")
    note: NoNulText | None = Field(None, max_length=NOTE_LENGTH)


class ImageB64In(BaseModel):
    image_b64: str = Field(description="base64 of the JPEG/PNG/WebP/BMP/GIF bytes")
    filename: NoNulText | None = Field(None, max_length=255)


class UploadOut(BaseModel):
    added: list[dict] = Field(description="name, sha256, label, previous_label, outcome "
                              "(added, already in the dataset, relabelled)")
    rejected: list[dict] = Field(description="name and reason of every file not added")


class RetrainIn(BaseModel):
    model_config = {"extra": "forbid"}

    target: str | None = Field(None, description="one of the configured targets (GET /api/runs/targets); "
                                                 "default: the first")
    parameters: dict[str, Any] = Field(default_factory=dict, description="pipeline parameter overrides, "
                                       "e.g. {\"frozen_epochs\": 1}; checked like `make run key=value`")

    @model_validator(mode="after")
    def _no_nul(self) -> RetrainIn:
        _no_nul_anywhere(self.target, "target")
        _no_nul_anywhere(self.parameters, "parameters")
        return self


class RunOut(BaseModel):
    id: str
    state: RunState
    target: str
    trigger: str = Field(description="manual or automatic")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    step: str | None = Field(description="the pipeline step running now")
    steps_done: int
    steps_total: int = Field(description="7; 6 for a run that ended without a promotion (deploy runs only then)")
    parameters: dict[str, Any]
    validated_photos: int = Field(description="photos with a verdict the run took in")
    new_validated_photos: int = Field(description="of which validated since the previous run")
    promoted: bool | None = Field(description="once succeeded: whether the challenger became champion")
    version: int | None = Field(description="once succeeded: the registry version it registered")
    champion_version: int | None
    reason: str | None = Field(description="the champion decision, or why the run failed")
    console_url: str | None = Field(description="remote runs: the run's page in the KFP or Vertex AI console")
    remote_id: str | None
    cancel_requested: bool
    log_tail: str | None = Field(None, description="local runs: the end of the run's log (GET /api/runs/{id})")
    label_overrides: int | None = Field(None, description="GET /api/runs/{id}: the reviewers' label overrides of "
                                        "training photos the run took in (label-overrides.json)")

    @classmethod
    def of(cls, run: TrainingRun, log_tail: str | None = None, label_overrides: int | None = None) -> RunOut:
        from feedback.retraining.runs import PIPELINE_STEPS

        return cls(id=run.id, state=run.state, target=run.target, trigger=run.trigger, created_at=run.created_at,
                   started_at=run.started_at, finished_at=run.finished_at, step=run.step,
                   steps_done=run.steps_done, parameters=run.parameters,
                   steps_total=len(PIPELINE_STEPS) - (run.state == "succeeded" and not run.promoted),
                   validated_photos=run.validated_photos, new_validated_photos=run.new_validated_photos,
                   promoted=run.promoted, version=run.version, champion_version=run.champion_version,
                   reason=run.reason, console_url=run.console_url, remote_id=run.remote_id,
                   cancel_requested=run.cancel_requested, log_tail=log_tail, label_overrides=label_overrides)


class RunList(BaseModel):
    runs: list[RunOut]
    active: str | None = Field(description="the id of the run that is queued or running, if any")


class TrainingStatus(BaseModel):
    run: RunOut | None = Field(description="the latest run (null before the first)")
    active: bool
    targets: list[str] = Field(description="where runs can go; the first is the default")
    new_validated_photos: int = Field(description="photos validated since the last finished run")
    retrain_min_new: int = Field(description="automatic retraining starts at this many (0: never)")
