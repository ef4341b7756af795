"""Training photos in the review queue (feedback/labelling/training_photos.py).

    POST /api/training-photos/import   import the champion's run's suspects now (token-checked like
                                       every write; idempotent) -> the report: champion version, run,
                                       listed, added, already, skipped (each with its reason);
                                       503 naming the cause when the registry cannot be read
    GET  /api/training-photos/import   the last import's report (the app imports at start-up and
                                       when the champion changes), or null before any

The photos themselves are in the review queue (GET /api/review-queue, /review) as cards with
source "training"; a verdict is POST /api/predictions/{id}/validation like any.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import SQLAlchemyError

from feedback.labelling.service import FeedbackService
from feedback.settings import redact
from feedback.web.deps import get_service, require_writer

router = APIRouter(prefix="/api", tags=["training photos"])


@router.post("/training-photos/import", dependencies=[Depends(require_writer)],
             summary="Import the champion's run's training photos whose label may be wrong into the review queue")
async def import_training_photos(service: FeedbackService = Depends(get_service)) -> dict:
    try:
        return await run_in_threadpool(service.training_photos.import_champion)
    except SQLAlchemyError:
        raise  # the app's database handler answers (503)
    except Exception as exc:  # the registry or the photo storage (local or gs://) cannot be read now
        raise HTTPException(503, redact(f"the suspects could not be imported from the registry "
                                        f"{service.registry_uri}: {type(exc).__name__}: {exc}")) from None


@router.get("/training-photos/import", summary="The last import of training photos (null before any)")
def last_import(service: FeedbackService = Depends(get_service)) -> dict | None:
    return service.training_photos.last
