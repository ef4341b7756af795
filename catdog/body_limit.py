"""Request limits shared by the predictor (serving/) and the feedback app (feedback/).

    BodyLimitMiddleware(app, max_body_bytes, error_key, setting, on_status, limit_for, body_timeout_s)
    header_timeout_protocol(timeout_s) -> a uvicorn `http=` protocol class

Body size: Content-Length over the limit is answered 413 before the app reads a byte; a body
without one (chunked) is counted as the app reads it and the read raises a 413 HTTPException
once it passes the limit, so no more than the limit is ever held. The limit may depend on the
route (`limit_for(scope) -> (bytes, setting) | None`, else `max_body_bytes`). What the app does
not read is discarded by uvicorn after the answer (the connection stays usable), so a refused
body is never read into memory.

Body read deadline: the whole body must arrive within `body_timeout_s` of the request's headers;
a slower one (a client that trickles it) is answered 408 with `Connection: close`, which drops
the connection. A client that leaves mid-body (starlette's ClientDisconnect) gets no answer and
is no server error. Header deadline: uvicorn has a keep-alive timeout but none for a request's
headers (nor for a connection that never sends any), so header_timeout_protocol() subclasses
uvicorn's HTTP protocol: a connection whose request headers are not complete within `timeout_s`
of its opening, or of a later request's first bytes, is closed.

Starlette's RequestBodyLimitMiddleware (a fixed limit per app or route) is not used: its 413 is
plain text outside FastAPI's handlers and names no limit, and it has no read deadline.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

BODY_TIMEOUT_S = 60.0  # default deadline for a whole request body
HEADER_TIMEOUT_S = 10.0  # default deadline for a request's headers


class BodyTooLarge(HTTPException):
    """Raised by the wrapped receive(): the app's exception handlers answer it (413)."""

    def __init__(self, detail: str):
        super().__init__(413, detail)


class BodyTimeout(HTTPException):
    """Raised by the wrapped receive() when the body's deadline passed (408, connection closed)."""

    def __init__(self, timeout_s: float):
        super().__init__(408, f"the request body did not arrive within {timeout_s:g} s", headers={"Connection": "close"})


class BodyLimitMiddleware:
    """413 for bodies over the route's limit, 408 for bodies slower than `body_timeout_s`.

    `error_key` names the message's field in the JSON answers this middleware writes itself;
    `on_status` sees every response status (e.g. to count them); `setting` names the option that
    sets `max_body_bytes`, for the message; `limit_for(scope)` gives a route's own (limit, setting)."""

    def __init__(self, app, max_body_bytes: int, error_key: str = "error", setting: str = "",
                 on_status: Callable[[int], None] | None = None,
                 limit_for: Callable[[dict], tuple[int, str] | None] | None = None,
                 body_timeout_s: float | None = BODY_TIMEOUT_S):
        self.app = app
        self.max_body_bytes = int(max_body_bytes)
        self.error_key = error_key
        self.setting = setting
        self.on_status = on_status
        self.limit_for = limit_for
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def observed_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if self.on_status is not None:
                    self.on_status(message["status"])
            await send(message)

        limit, setting = (self.limit_for(scope) if self.limit_for else None) or (self.max_body_bytes, self.setting)
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return await self._error(observed_send, 400, f"invalid Content-Length header {value!r}")
                if length > limit:
                    return await self._error(observed_send, 413, too_large(f"{length:,} bytes", limit, setting))
        loop = asyncio.get_running_loop()
        deadline = None if self.body_timeout_s is None else loop.time() + self.body_timeout_s
        size, complete, disconnected = 0, False, False

        async def limited_receive():
            nonlocal size, complete, disconnected
            if complete:  # the body is in: later calls only wait for a disconnect
                return await receive()
            try:
                if deadline is None:
                    message = await receive()
                else:
                    message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except TimeoutError:
                raise BodyTimeout(self.body_timeout_s) from None
            if message["type"] != "http.request":
                complete = disconnected = True
                return message
            size += len(message.get("body", b""))
            if size > limit:
                raise BodyTooLarge(too_large(f"more than {limit:,} bytes", limit, setting))
            complete = not message.get("more_body", False)
            return message

        try:
            return await self.app(scope, limited_receive, observed_send)
        except (BodyTooLarge, BodyTimeout) as exc:  # an app without a handler for HTTPException
            if started:
                raise
            await self._error(observed_send, exc.status_code, exc.detail, exc.headers)
        except ClientDisconnect:  # the client left (or broke HTTP) mid-body: nobody to answer, no server error
            if not disconnected:
                raise

    async def _error(self, send, status: int, message: str, headers: dict | None = None) -> None:
        await json_error(send, status, {self.error_key: message}, headers)


async def json_error(send, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
    """Answer a JSON error straight from an ASGI middleware (the app's handlers are not reached)."""
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())]})
    await send({"type": "http.response.body", "body": body})


def too_large(size: str, limit: int, setting: str) -> str:
    hint = f" ({setting})" if setting else ""
    return f"request body of {size} is over the limit of {limit:,} bytes{hint}"


def header_timeout_protocol(timeout_s: float = HEADER_TIMEOUT_S, implementation: str = "auto") -> type:
    """uvicorn's HTTP protocol (`implementation`: auto = httptools when installed, else h11) with a
    header deadline: the connection is closed when a request's headers are not complete `timeout_s`
    after the connection opened, or after the first bytes of a later request arrived (between
    requests, uvicorn's timeout_keep_alive applies; the rest of a body the app did not read is not
    a new request). Use as uvicorn.Config(http=...)."""
    if implementation == "auto":
        try:
            import httptools  # noqa: F401
        except ImportError:
            implementation = "h11"
        else:
            implementation = "httptools"
    if implementation == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        class HeaderDeadlineHttpTools(_HeaderDeadline, HttpToolsProtocol):
            header_timeout_s = timeout_s

            def on_message_begin(self) -> None:  # the parser saw a request's first byte
                super().on_message_begin()
                self._arm_header_timer(restart=False)

            def on_headers_complete(self) -> None:
                self._cancel_header_timer()
                super().on_headers_complete()

        return HeaderDeadlineHttpTools

    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadlineH11(_HeaderDeadline, H11Protocol):
        header_timeout_s = timeout_s

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:
                self._cancel_header_timer()  # a request is in (its headers complete)
            elif self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
                self._arm_header_timer(restart=False)  # part of the next request's head is buffered

    return HeaderDeadlineH11


class _HeaderDeadline:
    """The timer of header_timeout_protocol's classes (uvicorn protocols: `loop`, `transport`)."""

    header_timeout_s: float
    _header_timer = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_header_timer()

    def _arm_header_timer(self, restart: bool = True) -> None:
        if self._header_timer is not None:
            if not restart:
                return
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)
