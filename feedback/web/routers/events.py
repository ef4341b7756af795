"""/api/events/inference: the sink of KServe's payload logger (feedback/labelling/endpoint_events.py).

    POST /api/events/inference     one CloudEvent (binary content mode): 202 pending, 201 stored,
                                   200 duplicate or ignored, 400/422 unreadable (nothing stored),
                                   401 without the token, 403 cross-origin, 413 over LOGGER_MAX_BODY_BYTES
    GET  /api/events/inference     the sink's counters (received, pending, stored, predictions,
                                   duplicate, ignored, malformed, unreadable, photo_rejected,
                                   expired, evicted, unauthorized, store_failed) and events waiting

Token: LOGGER_TOKEN when set, else APP_TOKEN (none set: open, as other writes are), as
`Authorization: Bearer <token>` or HTTP basic auth with the token as password (any user name):
KServe's agent sends no headers of its own, but Go's HTTP client sends a logger URL's
user:password@ as basic auth, so `logger.url: http://logger:<token>@catdog-feedback...` works.
require_logger reads headers only and runs before the route reads a byte of the body (the route
takes no body parameter, so FastAPI parses nothing first); the body cap is the app's
BodyLimitMiddleware's, LOGGER_MAX_BODY_BYTES for this route.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from feedback.web.deps import get_service, origin_problem
from feedback.labelling.endpoint_events import EndpointEvents
from feedback.labelling.service import FeedbackService

PATH = "/api/events/inference"
router = APIRouter(tags=["events"])


def sink(request: Request) -> EndpointEvents:
    """The app's one EndpointEvents (made on first use, on the event loop: no race)."""
    state = request.app.state
    if getattr(state, "endpoint_events", None) is None:
        state.endpoint_events = EndpointEvents(state.service)
    return state.endpoint_events


def presented_token(authorization: str) -> str:
    """The token of a Bearer or Basic (the password) Authorization header; "" when none."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, ValueError):
            return ""
    return ""


async def require_logger(request: Request, service: FeedbackService = Depends(get_service)) -> None:
    problem = origin_problem(request.headers)
    if problem:
        sink(request).count("unauthorized")
        raise HTTPException(403, problem)
    token = service.settings.logger_token or service.settings.app_token
    if token is None:
        return
    given = presented_token(request.headers.get("authorization", ""))
    if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        sink(request).count("unauthorized")
        raise HTTPException(401, "send the logger token (LOGGER_TOKEN, else APP_TOKEN) as Authorization: Bearer "
                                 "<token> or as the password of basic auth", headers={"WWW-Authenticate": "Bearer"})


@router.post(PATH, summary="Receive a KServe payload-logger CloudEvent (binary mode)",
             dependencies=[Depends(require_logger)], status_code=201,
             responses={202: {"description": "pending: waiting for the other event of its ce-id"},
                        200: {"description": "duplicate, or not an inference (ignored)"},
                        400: {"description": "not a logger CloudEvent"},
                        422: {"description": "the pair cannot be read; nothing stored"}})
async def receive_event(request: Request) -> JSONResponse:
    events = sink(request)
    body = await request.body()
    outcome = await run_in_threadpool(events.receive, request.headers, body)
    return JSONResponse(outcome.body(), status_code=outcome.status)


@router.get(PATH, summary="The payload-logger sink's counters")
async def event_counts(request: Request) -> dict:
    return {"route": PATH, **sink(request).snapshot()}
