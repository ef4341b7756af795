"""/health (liveness), /ready (the database can write, the predictor is ready) and /api/status.

/health is answered on the event loop itself: no thread pool, no database, no predictor, so a
hung predictor or database (or a pool busy with them) never makes it slow. /ready and
/api/status wait at most READY_TIMEOUT_S for each of the database and the predictor (probed at
the same time); past that, the part that did not answer is reported as such.
/api/status shows no server paths: where photos are stored is "local folder" or the gs:// URI.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from catdog import storage
from feedback.labelling.service import FeedbackService
from feedback.predictor_client.client import PredictorStatus
from feedback.web.deps import get_service

router = APIRouter(tags=["status"])


@router.get("/health", summary="Liveness: 200 while the process serves")
async def health() -> dict:
    return {"status": "ok"}


async def _bounded(function, timeout: float, what: str):
    """function() in the thread pool, or TimeoutError naming `what` after `timeout` seconds."""
    try:
        return await asyncio.wait_for(run_in_threadpool(function), timeout)
    except TimeoutError:
        raise TimeoutError(f"{what} did not answer within {timeout:g} s (READY_TIMEOUT_S)") from None


async def probe(service: FeedbackService, write: bool) -> tuple[str | None, PredictorStatus]:
    """(the database's problem or None, the predictor's status), each within READY_TIMEOUT_S."""
    timeout = service.settings.ready_timeout_s
    database, predictor = await asyncio.gather(
        _bounded(lambda: service.database_error(write=write), timeout, "the database"),
        _bounded(lambda: service.predictor_status(max_age_s=0), timeout, "the predictor"),
        return_exceptions=True)
    if isinstance(database, TimeoutError):
        database = str(database)
    if isinstance(predictor, TimeoutError):
        predictor = PredictorStatus(service.predictor.url, service.predictor.protocol, reachable=False, ready=False,
                                    error=str(predictor), explanations=service.predictor.explanations)
    for result in (database, predictor):
        if isinstance(result, BaseException):
            raise result
    return database, predictor


@router.get("/ready", summary="Readiness: 200 when the database can write and the predictor is ready, else 503")
async def ready(service: FeedbackService = Depends(get_service)) -> JSONResponse:
    database_error, predictor = await probe(service, write=True)
    problems = {}
    if database_error:
        problems["database"] = database_error
    if not predictor.ready:
        problems["predictor"] = predictor.error or "not ready"
    body = {"ready": not problems, **({"problems": problems} if problems else {})}
    return JSONResponse(body, status_code=503 if problems else 200)


@router.get("/api/status", summary="The predictor (reachable, model version), the store's counts")
async def status(service: FeedbackService = Depends(get_service)) -> dict:
    database_error, predictor = await probe(service, write=False)
    counts = None
    if database_error is None:
        try:
            counts = await _bounded(service.counts, service.settings.ready_timeout_s, "the database")
        except TimeoutError as exc:
            database_error = str(exc)
    uri = service.settings.feedback_uri
    return {
        "predictor": predictor.as_dict(),
        "database": {"reachable": database_error is None, "error": database_error,
                     "schema_revision": service.schema_revision},
        "counts": counts,
        "labels": list(service.labels),
        "photo_store": uri if storage.is_gcs(uri) else "local folder",
        "auth_required": service.settings.auth_required,
    }
