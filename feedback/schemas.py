"""The REST API's request and response bodies (they make the OpenAPI document at /docs)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from feedback.models import NAME_LENGTH, NOTE_LENGTH, Prediction, Status, Validation


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


class PredictionOut(BaseModel):
    id: str
    predicted_class: str
    confidence: float = Field(description="probability of predicted_class")
    probabilities: dict[str, float]
    model_name: str
    model_version: str | None
    prediction_time: float = Field(description="seconds the predictor took to answer")
    timestamp: datetime
    status: Status
    validated_label: str | None = Field(description="the latest verdict of a person on this photo")
    photo: PhotoOut
    explanation: dict | None = None
    validations: list[ValidationOut] | None = Field(None, description="the photo's verdicts, oldest first "
                                                    "(single-prediction answers only)")

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
            explanation=prediction.explanation,
            validations=None if validations is None else [ValidationOut.of(v) for v in validations],
        )


class PredictionList(BaseModel):
    predictions: list[PredictionOut]
    count: int = Field(description="predictions in this answer")
    limit: int
    offset: int


class ReviewQueue(BaseModel):
    length: int = Field(description="photos waiting for a verdict")
    predictions: list[PredictionOut] = Field(description="the least confident first, at most `limit`")


class ValidationIn(BaseModel):
    label: str = Field(description="the right label, e.g. dog", max_length=64)
    by: str | None = Field(None, max_length=NAME_LENGTH, description="who says so (optional)")
    note: str | None = Field(None, max_length=NOTE_LENGTH)


class ImageB64In(BaseModel):
    image_b64: str = Field(description="base64 of the JPEG/PNG/WebP/BMP/GIF bytes")
    filename: str | None = Field(None, max_length=255)


class UploadOut(BaseModel):
    added: list[dict] = Field(description="name, sha256, label, previous_label, outcome "
                              "(added, already in the dataset, relabelled)")
    rejected: list[dict] = Field(description="name and reason of every file not added")
