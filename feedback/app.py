"""The FastAPI application: routers, static files, offline API docs, limits and error answers.

    create_app(service) -> FastAPI       (service: a started feedback.service.FeedbackService)

Errors are answers, never 5xx for bad input: photos we cannot use are 422 (413 when too large),
unknown predictions 404, unknown labels 422, a predictor that is down, slow or not ready 503
(naming it), a predictor answer we cannot read 502, a heat map asked of a prediction whose
model is no longer served 409. Bound to loopback, requests must name 127.0.0.1 or localhost as
their Host (DNS rebinding). Request bodies over MAX_REQUEST_BYTES get
413 before they are parsed. HTML pages carry a Content-Security-Policy that allows this origin only.
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
from starlette.middleware.trustedhost import TrustedHostMiddleware

from catdog.body_limit import BodyLimitMiddleware
from feedback.photos import PhotoRejected
from feedback.predictor import PredictorError
from feedback.routers import dashboard, pages, predictions, runs, status, uploads
from feedback.service import FeedbackService, ModelChanged, NotFound, UnknownLabel

logger = logging.getLogger("catdog.feedback")
STATIC = Path(__file__).resolve().parent / "static"
# Swagger UI 5's swagger-ui-bundle.js and swagger-ui.css, as the fastapi-offline package ships them
# (/docs itself is feedback.routers.pages' template; the package's FastAPIOffline() is not used)
DOCS_ASSETS = Path(str(files("fastapi_offline") / "static"))
LOOPBACK_NAMES = ("127.0.0.1", "localhost")
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
    for router in (predictions.router, uploads.router, runs.router, status.router, dashboard.router, pages.router):
        app.include_router(router)
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

    @app.exception_handler(ModelChanged)
    async def model_changed(request: Request, exc: ModelChanged):
        return _error(409, str(exc))

    app.add_middleware(SecurityHeaders)
    app.add_middleware(GZipMiddleware, minimum_size=4096)  # plotly.js: 4.8 MB, 1.5 MB gzipped
    if service.settings.host in LOOPBACK_NAMES:  # a web page on another name (DNS rebinding) is refused
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK_NAMES))
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=service.settings.max_request_bytes, error_key="detail",
                       setting="MAX_REQUEST_BYTES")
    return app
