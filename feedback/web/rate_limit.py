"""Per-client rate limits of the feedback app, answered 429 before anything reads the request's body.

    parse_rate(text) -> tuple[RateLimitItem, ...]     ("100/minute"; "0" or "off" -> (): no limit)
    exempt_paths(prefixes) -> exempt(scope) -> bool   (the exemption hook RateLimit takes)
    RateLimit(app, writes, reads, exempt)             pure ASGI middleware

Contract:
- A client is the peer address of the connection (scope["client"]); X-Forwarded-For is not read
  here. uvicorn rewrites the peer from X-Forwarded-For only for the proxies TRUSTED_PROXIES
  lists (feedback.web.server.uvicorn_options; none by default), so behind a trusted proxy each
  end client has its own limit, and nobody else can pick their key by sending the header.
- Writes (POST, PUT, PATCH, DELETE) count against RATE_LIMIT_WRITES (default 100/minute, as the
  older service), everything else (GET, HEAD, OPTIONS: pages, static files, the API's reads)
  against RATE_LIMIT_READS (default 600/minute); each has its own budget per client. Several
  limits may be given ("100/minute;1000/hour"): a request must fit all of them.
- Moving window (limits.MovingWindowRateLimiter, in-memory): a client over its limit gets
  429 {"detail": ...} with `Retry-After: <seconds>` (integer, >= 1): when the oldest request of
  its window leaves it. A rejected request is not counted (a client that keeps retrying gets in
  again once its window frees up) and never reaches the app, so it stores nothing.
- `exempt(scope)` requests are never limited nor counted: by default the paths RATE_LIMIT_EXEMPT
  lists (/health, /ready, /metrics and /api/events/, the payload-logger sink, which authenticates
  its own client with its token: the predictor's logger must never be throttled into losing
  events). A sink that checks its token here can pass its own predicate.
- The counts live in this process's memory: several replicas each count their own clients (a
  client spread over N replicas gets up to N times the limit); a restart forgets them.

Why `limits` and not `slowapi` (built on it): slowapi's limits are declared per route with
decorators (each route taking a `request` parameter), or as one app-wide default that cannot tell
reads from writes, and its 429 comes from an exception handler after routing. The app's other
guards (feedback.web.deps.WriteGuard, catdog.body_limit) are pure ASGI middleware that answer
from the headers before the body is read; this one is too, on slowapi's engine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from catdog.body_limit import json_error

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OFF = ("0", "off")
UNITS = "second, minute, hour, day, month or year"


def parse_rate(text: str) -> tuple[RateLimitItem, ...]:
    """The limits `text` names ("100/minute", "100 per minute", "10/second;100/minute"); "0" and
    "off" (any case) -> () (no limit). ValueError names what is wrong."""
    text = text.strip()
    if text.lower() in OFF:
        return ()
    try:
        items = tuple(parse_many(text))
    except ValueError:
        raise ValueError(f"invalid rate limit {text!r}: write COUNT/UNIT ({UNITS}), e.g. 100/minute, "
                         "several separated by ';', or 'off'") from None
    if any(item.amount < 1 for item in items):
        raise ValueError(f"invalid rate limit {text!r}: a count must be 1 or more (to turn limits off: 'off')")
    return items


def exempt_paths(prefixes: Iterable[str]) -> Callable[[dict], bool]:
    """exempt(scope): the request's path is one of `prefixes`, or under one ("/health" exempts
    /health and /health/..., not /healthz; "/api/events/" everything under it)."""
    exact = tuple(p.rstrip("/") for p in prefixes if p.rstrip("/"))
    under = tuple(p if p.endswith("/") else p + "/" for p in prefixes)

    def exempt(scope: dict) -> bool:
        path = scope.get("path", "")
        return path in exact or path.startswith(under)

    return exempt


class RateLimit:
    """429 for a client over its limit (see the module's contract). `writes`, `reads`: parse_rate's
    items (() = no limit); `names`: the settings that set them, for the message."""

    def __init__(self, app, writes: tuple[RateLimitItem, ...], reads: tuple[RateLimitItem, ...],
                 exempt: Callable[[dict], bool] = lambda scope: False,
                 names: tuple[str, str] = ("RATE_LIMIT_WRITES", "RATE_LIMIT_READS")):
        self.app = app
        self.limits = {"writes": (writes, names[0]), "reads": (reads, names[1])}
        self.exempt = exempt
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not self.exempt(scope):
            kind = "writes" if scope["method"] in WRITE_METHODS else "reads"
            items, setting = self.limits[kind]
            client = (scope.get("client") or ("unknown",))[0]
            # test all, then hit all: no await in between, so nothing interleaves, and a request
            # refused by one limit takes nothing from the others
            full = next((item for item in items if not self.limiter.test(item, kind, client)), None)
            if full is None:
                for item in items:
                    if not self.limiter.hit(item, kind, client):  # cannot happen: test() passed just now
                        full = item
                        break
            if full is not None:
                reset, _ = self.limiter.get_window_stats(full, kind, client)
                retry = max(1, math.ceil(reset - time.time()))
                return await json_error(send, 429, {"detail": (
                    f"too many requests: this client ({client}) is over its limit of {full} for {kind} "
                    f"({setting}); retry in {retry} s")}, {"Retry-After": str(retry)})
        return await self.app(scope, receive, send)
