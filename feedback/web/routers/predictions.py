"""/api/predict and /api/predictions: predict a photo, list and read predictions, validate them.

The predict body is capped before it is read (feedback.web.app: json_limit(MAX_PHOTO_BYTES), the
base64 form of the largest photo), so a route here never holds more than that.
"""

from __future__ import annotations

import base64
import binascii
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from catdog.preprocessing import MEDIA_TYPES
from feedback.labelling.service import FeedbackService
from feedback.settings import ReviewOrder
from feedback.store.tables import NAME_LENGTH, Status
from feedback.web.deps import get_service, require_writer, same_origin
from feedback.web.schemas import MAX_OFFSET, ImageB64In, PredictionList, PredictionOut, ReviewQueue, ValidationIn

router = APIRouter(prefix="/api", tags=["predictions"])
PAGE_CLIENT_HEADER = "x-feedback-client"  # the page sends "page": its uploads are counted apart
PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
                "image": {"type": "string", "format": "binary", "description": "the photo"}}}},
            "application/json": {"schema": ImageB64In.model_json_schema()},
        },
    }
}


def json_limit(max_photo_bytes: int) -> int:
    """The largest JSON predict body a photo of max_photo_bytes needs (base64 is 4/3 larger)."""
    return -(-max_photo_bytes // 3) * 4 + 64 * 1024


async def read_image(request: Request, max_bytes: int) -> tuple[bytes, str | None]:
    """The photo of a predict request: multipart field `image`, or JSON {"image_b64": ...}."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        async with request.form(max_files=1, max_fields=8) as form:
            image = form.get("image")
            if not isinstance(image, UploadFile):
                raise HTTPException(400, "multipart field 'image' (a file) is missing")
            if image.size is not None and image.size > max_bytes:
                raise HTTPException(413, f"photo of {image.size:,} bytes is over the limit of {max_bytes:,} "
                                         "bytes (MAX_PHOTO_BYTES)")
            return await image.read(), image.filename
    if content_type.startswith("application/json"):
        try:
            body = ImageB64In.model_validate_json(await request.body())  # capped by the body limit
        except ValidationError as exc:
            raise HTTPException(400, f"expected JSON {{\"image_b64\": \"<base64>\"}}: {exc.errors()[0]['msg']}") from None
        try:
            return base64.b64decode(body.image_b64, validate=True), body.filename
        except (binascii.Error, ValueError):
            raise HTTPException(400, "image_b64 is not valid base64") from None
    raise HTTPException(415, "send multipart/form-data with an 'image' file, or JSON {\"image_b64\": ...}")


@router.post("/predict", response_model=PredictionOut, openapi_extra=PREDICT_BODY, dependencies=[Depends(same_origin)],
             summary="Predict a photo (stored, with its prediction)")
async def predict(request: Request, explain: bool = Query(False, description="also ask the predictor's :explain "
                                                                           "(a heat map of where the model looked)"),
                  service: FeedbackService = Depends(get_service)) -> PredictionOut:
    data, name = await read_image(request, service.settings.max_photo_bytes)
    source = "page" if request.headers.get(PAGE_CLIENT_HEADER) == "page" else "api"
    prediction = await run_in_threadpool(service.predict, data, name, explain, source)
    return PredictionOut.of(prediction)


@router.get("/predictions", response_model=PredictionList, summary="List predictions")
def list_predictions(
    status: Status | None = None,
    model_version: str | None = None,
    flagged: bool | None = Query(None, description="true: the model flagged the photo as maybe neither label; "
                                                    "false: scored and not flagged"),
    order: Literal["newest", "least_confident"] = "newest",
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    service: FeedbackService = Depends(get_service),
) -> PredictionList:
    rows = service.list_predictions(status, model_version, order, limit, offset, flagged=flagged)
    return PredictionList(predictions=[PredictionOut.of(p) for p in rows], count=len(rows), limit=limit, offset=offset)


ORDER_QUERY = Query(None, description="least_confident (smallest confidence first), random (a shuffle by `seed`), "
                                      "ood_first (flagged as neither, then highest ood_score; unscored last), "
                                      "newest, diverse (the least confident, spread over the model's embedding: "
                                      "farthest first from the photos already judged) or training_suspects_first "
                                      "(training photos whose label may be wrong first); none: the REVIEW_ORDER "
                                      "setting (least_confident unless set)")
SEED_QUERY = Query(None, ge=0, le=2**31 - 1, description="order=random: the shuffle's seed (none: one is drawn "
                                                         "and returned; the same seed gives the same order)")


QUEUE_QUERY = Query("review", description="review: photos nobody validated yet; second-opinion: photos reviewer "
                                           "`by` has not judged whose reviewers disagree (or tie), or that one "
                                           "person judged while the model was unsure (below SECOND_OPINION_CONFIDENCE)")
BY_QUERY = Query(None, max_length=NAME_LENGTH, description="queue=second-opinion: who asks (their own verdicts are "
                                                           "left out; none: the unnamed reviewer \"anonymous\")")


@router.get("/review-queue", response_model=ReviewQueue,
            summary="Photos nobody validated yet, in the review order (each photo once), or those that need a second opinion")
def review_queue(limit: int = Query(50, ge=0, le=500), order: ReviewOrder | None = ORDER_QUERY,
                 seed: int | None = SEED_QUERY, queue: Literal["review", "second-opinion"] = QUEUE_QUERY,
                 by: str | None = BY_QUERY, service: FeedbackService = Depends(get_service)) -> ReviewQueue:
    if queue == "second-opinion" and (order is not None or seed is not None):
        raise HTTPException(422, "the second-opinion queue has one order (ties, then other disagreements, then "
                                 "single-reviewer photos; least confident first): leave out order and seed")
    page = service.second_opinion(limit, by) if queue == "second-opinion" else service.review_queue(limit, order, seed)
    return ReviewQueue(queue=queue, length=page.length, order=page.order, seed=page.seed,
                       predictions=[PredictionOut.of(p) for p in page.predictions])


def _detail(service: FeedbackService, prediction_id: str) -> PredictionOut:
    return PredictionOut.of(*service.detail(prediction_id))


@router.get("/predictions/{prediction_id}", response_model=PredictionOut, summary="One prediction and its verdicts")
def get_prediction(prediction_id: str, service: FeedbackService = Depends(get_service)) -> PredictionOut:
    return _detail(service, prediction_id)


@router.get("/predictions/{prediction_id}/photo", summary="The photo of a prediction",
            response_class=Response, responses={200: {"content": {t: {} for t in MEDIA_TYPES.values()}}})
def get_photo(prediction_id: str, service: FeedbackService = Depends(get_service)) -> Response:
    data, fmt = service.photo(prediction_id)
    return Response(data, media_type=MEDIA_TYPES[fmt], headers={
        "Cache-Control": "private, max-age=86400, immutable",  # content-addressed: never changes
        "Content-Security-Policy": "default-src 'none'; sandbox",
    })


@router.post("/predictions/{prediction_id}/explanation", response_model=PredictionOut,
             dependencies=[Depends(same_origin)],
             summary="Ask the predictor to explain a stored prediction (when it has no explanation yet)")
def explain(prediction_id: str, service: FeedbackService = Depends(get_service)) -> PredictionOut:
    return PredictionOut.of(service.explain(prediction_id))


@router.post("/predictions/{prediction_id}/validation", response_model=PredictionOut, status_code=201,
             dependencies=[Depends(require_writer)], summary="Confirm or correct a prediction, or say it is neither label (\"label\": \"neither\")")
def validate(prediction_id: str, body: ValidationIn, request: Request,
             service: FeedbackService = Depends(get_service)) -> PredictionOut:
    source = "page" if request.headers.get(PAGE_CLIENT_HEADER) == "page" else "api"
    service.validate(prediction_id, body.label, body.by or None, body.note or None, source)
    return _detail(service, prediction_id)
