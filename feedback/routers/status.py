"""/health (liveness), /ready (database and predictor reachable) and /api/status."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from feedback.deps import get_service
from feedback.service import FeedbackService

router = APIRouter(tags=["status"])


@router.get("/health", summary="Liveness: 200 while the process serves")
def health() -> dict:
    return {"status": "ok"}


@router.get("/ready", summary="Readiness: 200 when the database and the predictor answer, else 503")
def ready(service: FeedbackService = Depends(get_service)) -> JSONResponse:
    database_error = service.database_error()
    predictor = service.predictor_status(max_age_s=0)
    problems = {}
    if database_error:
        problems["database"] = database_error
    if not predictor.ready:
        problems["predictor"] = predictor.error or "not ready"
    body = {"ready": not problems, **({"problems": problems} if problems else {})}
    return JSONResponse(body, status_code=503 if problems else 200)


@router.get("/api/status", summary="The predictor (reachable, model version), the store's counts")
def status(service: FeedbackService = Depends(get_service)) -> dict:
    database_error = service.database_error()
    return {
        "predictor": service.predictor_status(max_age_s=0).as_dict(),
        "database": {"reachable": database_error is None, "error": database_error,
                     "schema_revision": service.schema_revision},
        "counts": service.counts() if database_error is None else None,
        "labels": list(service.labels),
        "feedback_uri": service.settings.feedback_uri,
        "dataset_uri": service.photos.dataset_root,
        "auth_required": service.settings.auth_required,
    }
