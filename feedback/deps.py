"""Dependencies of the routers: the service, and the guard of the routes that change data."""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from feedback.service import FeedbackService

bearer = HTTPBearer(auto_error=False, description="APP_TOKEN, when the app has one")


def get_service(request: Request) -> FeedbackService:
    return request.app.state.service


def same_origin(request: Request) -> None:
    """Every POST: a browser may send it from this app's own pages only. This keeps another web
    site open in the same browser from posting to an app on 127.0.0.1 (a multipart form post
    needs no CORS preflight); scripts and curl send no Origin header."""
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, f"cross-origin request from {origin} refused")


def require_writer(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
                   service: FeedbackService = Depends(get_service)) -> None:
    """Routes that change verdicts or the dataset: same_origin, and the bearer token when APP_TOKEN is set."""
    same_origin(request)
    token = service.settings.app_token
    if token is None:
        return
    given = credentials.credentials if credentials and credentials.scheme.lower() == "bearer" else ""
    if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise HTTPException(401, "this route changes data: send Authorization: Bearer <APP_TOKEN>",
                            headers={"WWW-Authenticate": "Bearer"})
