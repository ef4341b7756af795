"""Dependencies of the routers (the service, the guards of routes that change data) and the ASGI
middleware that applies those guards from the request's headers, before anything reads its body.

- same_origin: every POST; a browser may send it from this app's own pages only.
- require_writer: routes that change verdicts, the dataset or runs: same_origin, and the bearer
  token when APP_TOKEN is set.
- WriteGuard (middleware): finds the route a request goes to and runs the checks its declared
  dependencies name, from headers only; a refused request is answered 401/403 without a byte of
  its body being read (FastAPI parses a JSON body before it runs a route's dependencies, so the
  dependencies alone would parse an unauthenticated 100 MB body first). The dependencies stay on
  the routes: they declare the rule (and the OpenAPI security scheme) and check it again.
- RejectNul (middleware): a NUL character in the path or query is a 422.
- LoopbackHost (middleware): bound to a loopback address, a request must name that address,
  127.0.0.1 or localhost as its Host (a page on another name that resolves to 127.0.0.1, DNS
  rebinding, is refused).
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.routing import Match

from catdog.body_limit import json_error
from feedback.labelling.service import FeedbackService

bearer = HTTPBearer(auto_error=False, description="APP_TOKEN, when the app has one")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = ("127.0.0.1", "localhost")


async def get_service(request: Request) -> FeedbackService:
    """async (as are the guards): a sync dependency would wait for a thread of the pool that
    blocking routes may have filled, and /ready, /api/status must not."""
    return request.app.state.service


def origin_problem(headers: Headers) -> str | None:
    """Why a request with these headers is cross-origin (None: it is not). Scripts and curl send
    no Origin header; a browser does on every POST, and a multipart form post from another site
    needs no CORS preflight, so this keeps other web sites from posting to an app on 127.0.0.1."""
    origin = headers.get("origin")
    if origin and urlsplit(origin).netloc != headers.get("host"):
        return f"cross-origin request from {origin} refused"
    return None


def token_problem(headers: Headers, service: FeedbackService) -> str | None:
    """Why the request's bearer token does not open a write route (None: it does, or no APP_TOKEN)."""
    token = service.settings.app_token
    if token is None:
        return None
    scheme, _, given = headers.get("authorization", "").partition(" ")
    given = given.strip() if scheme.lower() == "bearer" else ""
    if hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        return None
    return "this route changes data: send Authorization: Bearer <APP_TOKEN>"


async def same_origin(request: Request) -> None:
    problem = origin_problem(request.headers)
    if problem:
        raise HTTPException(403, problem)


async def require_writer(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
                   service: FeedbackService = Depends(get_service)) -> None:
    """Routes that change verdicts or the dataset: same_origin, and the bearer token when APP_TOKEN is set."""
    await same_origin(request)
    problem = token_problem(request.headers, service)
    if problem:
        raise HTTPException(401, problem, headers={"WWW-Authenticate": "Bearer"})


def guards_of(route) -> set:
    """The guard dependencies (same_origin, require_writer) a route declares."""
    return {d.dependency for d in getattr(route, "dependencies", ()) if d.dependency in (same_origin, require_writer)}


def matching_route(routes, scope):
    """The route of `routes` (the routers' APIRoutes) that takes this request (None: none matches fully)."""
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
    return None


async def detail_error(send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    await json_error(send, status, {"detail": detail}, headers)


class WriteGuard:
    """Runs the guards of the route a request goes to from its headers, before the body is read.
    `routes`: the app's routes (their guards are read from their declared dependencies)."""

    def __init__(self, app, routes: list, service: FeedbackService):
        self.app = app
        self.routes = routes
        self.service = service

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            route = matching_route(self.routes, scope)
            guards = guards_of(route) if route is not None else set()
            if guards:
                headers = Headers(scope=scope)
                problem = origin_problem(headers)
                if problem:
                    return await detail_error(send, 403, problem)
                if require_writer in guards:
                    problem = token_problem(headers, self.service)
                    if problem:
                        return await detail_error(send, 401, problem, {"WWW-Authenticate": "Bearer"})
        return await self.app(scope, receive, send)


def allowed_hosts(bound: str) -> frozenset[str]:
    """Host names (without port) a loopback app answers to: its bound address (IPv6 in
    brackets, as in a URL), 127.0.0.1 and localhost."""
    name = f"[{bound}]" if ":" in bound else bound
    return frozenset({name.lower(), *LOOPBACK_NAMES})


def host_name(host: str) -> str:
    """The Host header without its port: '[::1]:8000' -> '[::1]', 'localhost:8000' -> 'localhost'."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[:end + 1] if end > 0 else host
    name, _, port = host.rpartition(":")
    return name if name and port.isdigit() else host


class LoopbackHost:
    """400 for a request whose Host is not one of allowed_hosts(bound). Hand-rolled rather than
    Starlette's TrustedHostMiddleware: that one cannot read an IPv6 Host ('[::1]:8000') and
    answers in plain text, not the app's JSON."""

    def __init__(self, app, bound: str):
        self.app = app
        self.allowed = allowed_hosts(bound)

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            host = Headers(scope=scope).get("host", "")
            if host_name(host) not in self.allowed:
                return await detail_error(send, 400, f"invalid Host header {host[:100]!r}: this app answers to "
                                                   f"{', '.join(sorted(self.allowed))} only")
        return await self.app(scope, receive, send)


class RejectNul:
    """422 for a request whose path or query string holds a NUL character (%00): ids and filters
    go to the database, and PostgreSQL cannot take one (the same answer on every database)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            query = scope.get("query_string", b"")
            if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
                return await detail_error(send, 422, "the path or query holds a NUL character (%00), "
                                                   "which no id or filter can contain")
        return await self.app(scope, receive, send)
