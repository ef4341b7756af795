"""An ASGI middleware that answers 413 to request bodies over a size limit, before any parsing.

Shared by the predictor (serving/) and the feedback app (feedback/). Starlette and uvicorn have
no body-size limit of their own, hence this small one: Content-Length is checked up front;
chunked bodies are counted while read and replayed to the app when they fit. The client always
gets the answer, not a reset: the oversized body is read and dropped (up to DRAIN_LIMIT_BYTES).
"""

from __future__ import annotations

import json
from collections.abc import Callable

DRAIN_LIMIT_BYTES = 64 * 1024 * 1024  # read (and drop) at most this much of an oversized body


class BodyLimitMiddleware:
    """413 for bodies over `max_body_bytes`; `error_key` names the message's field in the JSON
    answer; `on_status` sees every response status (e.g. to count them); `setting` names the
    option that sets the limit, for the message."""

    def __init__(self, app, max_body_bytes: int, error_key: str = "error", setting: str = "",
                 on_status: Callable[[int], None] | None = None):
        self.app = app
        self.max_body_bytes = int(max_body_bytes)
        self.error_key = error_key
        self.setting = setting
        self.on_status = on_status

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def observed_send(message):
            if message["type"] == "http.response.start" and self.on_status is not None:
                self.on_status(message["status"])
            await send(message)

        length = None
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return await self._error(observed_send, 400, f"invalid Content-Length header {value!r}")
        if length is not None:
            if length > self.max_body_bytes:
                await _drain(receive, min(length, DRAIN_LIMIT_BYTES))
                return await self._error(observed_send, 413, self._too_large(f"{length:,} bytes"))
            return await self.app(scope, receive, observed_send)
        if scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return await self.app(scope, receive, observed_send)
        # No Content-Length (chunked): read up to the limit, then replay the body to the app.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                if more:
                    await _drain(receive, DRAIN_LIMIT_BYTES)
                return await self._error(observed_send, 413, self._too_large(f"more than {self.max_body_bytes:,} bytes"))
            chunks.append(chunk)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, observed_send)

    def _too_large(self, size: str) -> str:
        hint = f" ({self.setting})" if self.setting else ""
        return f"request body of {size} is over the limit of {self.max_body_bytes:,} bytes{hint}"

    async def _error(self, send, status: int, message: str) -> None:
        body = json.dumps({self.error_key: message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


async def _drain(receive, limit: int) -> None:
    """Read and drop the body (up to `limit`), so the client sees our answer, not a reset."""
    read = 0
    while read <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
