"""The FastAPI application: routers, static files, offline API docs, limits and error answers.

    create_app(service) -> FastAPI       (service: a started feedback.labelling.service.FeedbackService)

Every error is JSON {"detail": ...}, never 5xx for bad input: photos we cannot use are 422 (413
when too large), unknown predictions 404, unknown labels 422, a predictor that is down, slow or
not ready 503 (naming it), a predictor answer we cannot read 502, a heat map asked of a
prediction whose model is no longer served 409, a database that cannot be used (read-only,
unreachable) 503; anything unexpected is a 500 with no internals (the traceback is logged).

Before a route reads a byte of a request (outermost first): security headers on every answer;
per-client rate limits, 429 with Retry-After (feedback.web.rate_limit: RATE_LIMIT_WRITES,
RATE_LIMIT_READS; /health, /ready, /metrics and /api/events/ exempt by default); bound to a
loopback address, the Host must name it, 127.0.0.1 or localhost (DNS rebinding,
feedback.web.deps.LoopbackHost); the guards of routes that change data (same origin, APP_TOKEN) run
from the headers (feedback.web.deps.WriteGuard); the body is capped per route before it is parsed
(catdog.body_limit: predict MAX_PHOTO_BYTES base64-encoded, upload-data MAX_REQUEST_BYTES, every
other route JSON_BODY_BYTES) and must arrive within BODY_TIMEOUT_S. HTML pages carry a
Content-Security-Policy that allows this origin only.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import InterfaceError, InternalError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from catdog.body_limit import BodyLimitMiddleware
from feedback.monitoring import metrics as app_metrics
from feedback.labelling.inputs import InvalidText, ModelChanged, NotFound, UnknownLabel, database_problem
from feedback.labelling.service import FeedbackService
from feedback.labelling.reviewers import NameRequired
from feedback.predictor_client.client import PredictorError
from feedback.settings import is_loopback, redact
from feedback.store.photos import PhotoRejected
from feedback.web.deps import LoopbackHost, RejectNul, WriteGuard, matching_route
from feedback.web.rate_limit import RateLimit, exempt_paths, parse_rate
from feedback.web.routers import dashboard, events, pages, predictions, runs, status, training_photos, uploads

logger = logging.getLogger("catdog.feedback")
STATIC = Path(__file__).resolve().parent / "static"
# Swagger UI 5's swagger-ui-bundle.js and swagger-ui.css, as the fastapi-offline package ships them
# (/docs itself is feedback.web.routers.pages' template; the package's FastAPIOffline() is not used)
DOCS_ASSETS = Path(str(files("fastapi_offline") / "static"))
JSON_BODY_BYTES = 64 * 1024  # the body cap of every route but predict and upload-data
# a database that cannot be used now (read-only, unreachable, its pool exhausted): 503, not 500
DATABASE_UNAVAILABLE = (OperationalError, InternalError, InterfaceError, PoolTimeout)
PAGE_POLICY = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


class SecurityHeaders:
    """nosniff on everything; the page policy on every answer that sets none itself (/docs included)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"same-origin"))
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", PAGE_POLICY.encode()))
                message = {**message, "headers": headers}
            await send(message)

        return await self.app(scope, receive, with_headers)


def _error(status_code: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status_code)


def create_app(service: FeedbackService) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()

    app = FastAPI(title="catdog feedback", version="1", docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Predictions people can confirm or correct; validated photos become training data.")
    app.state.service = service
    routers = (predictions.router, uploads.router, runs.router, status.router, dashboard.router, pages.router,
               events.router, training_photos.router)
    for router in routers:
        app.include_router(router)
    routes = [route for router in routers for route in router.routes]  # what the guards and limits match
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/docs-assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")  # /docs: pages.api_docs

    @app.exception_handler(PhotoRejected)
    async def photo_rejected(request: Request, exc: PhotoRejected):
        return _error(exc.status, str(exc))

    @app.exception_handler(PredictorError)
    async def predictor_error(request: Request, exc: PredictorError):
        logger.warning("%s %s: %s", request.method, request.url.path, exc)
        return _error(exc.status, str(exc))

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound):
        return _error(404, str(exc))

    @app.exception_handler(UnknownLabel)
    async def unknown_label(request: Request, exc: UnknownLabel):
        return _error(422, str(exc))

    @app.exception_handler(InvalidText)
    async def invalid_text(request: Request, exc: InvalidText):
        return _error(422, str(exc))

    @app.exception_handler(NameRequired)
    async def name_required(request: Request, exc: NameRequired):
        return _error(422, str(exc))

    @app.exception_handler(ModelChanged)
    async def model_changed(request: Request, exc: ModelChanged):
        return _error(409, str(exc))

    async def database_unavailable(request: Request, exc: Exception):
        logger.error("%s %s: the database failed: %s", request.method, request.url.path, redact(str(exc)))
        return _error(503, f"the database cannot be written or reached now ({database_problem(exc)}); try again later")

    for error in DATABASE_UNAVAILABLE:
        app.add_exception_handler(error, database_unavailable)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        logger.error("500 %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, f"internal error ({type(exc).__name__}); see the app's log")

    settings = service.settings
    route_limits = {  # path -> (bytes, the setting that sets them)
        "/api/predict": (predictions.json_limit(settings.max_photo_bytes), "MAX_PHOTO_BYTES, base64-encoded"),
        "/api/upload-data": (settings.max_request_bytes, "MAX_REQUEST_BYTES"),
        events.PATH: (settings.logger_max_body_bytes, "LOGGER_MAX_BODY_BYTES"),
    }

    def body_limit(scope) -> tuple[int, str] | None:
        route = matching_route(routes, scope)
        return route_limits.get(getattr(route, "path", None))

    # added innermost first: the last one added sees a request first
    app.add_middleware(GZipMiddleware, minimum_size=4096)  # plotly.js: 4.8 MB, 1.5 MB gzipped
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=JSON_BODY_BYTES, error_key="detail", limit_for=body_limit,
                       body_timeout_s=settings.body_timeout_s)
    app.add_middleware(WriteGuard, routes=routes, service=service)
    app.add_middleware(RejectNul)
    if is_loopback(settings.host):  # a web page on another name (DNS rebinding) is refused
        app.add_middleware(LoopbackHost, bound=settings.host)
    # outside every guard: a client over its limit is refused before any of them runs (token guesses count)
    app.add_middleware(RateLimit, writes=parse_rate(settings.rate_limit_writes),
                       reads=parse_rate(settings.rate_limit_reads), exempt=exempt_paths(settings.rate_limit_exempt))
    app.add_middleware(SecurityHeaders)
    app_metrics.install(app, service, routes)  # GET /metrics (no token: a read route) + request times, outermost
    return app
