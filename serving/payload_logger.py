"""Payload logging of the local predictor: the CloudEvents KServe's agent sends for an
InferenceService with `spec.predictor.logger` (mode all), sent by `make serve`/`make up` itself.

    PayloadLogger(url, token=None, ...).start() / .stop()        the sender (one thread)
    PayloadLoggingMiddleware(app, payload_logger)                 the ASGI hook (serving.app)

What is sent, per inference (POST .../<model>:predict, V2 .../infer, the Vertex predict route),
as KServe's agent (pkg/logger) sends it: two CloudEvents 1.0 in binary content mode (built with the
`cloudevents` SDK), sharing ce-id (the request's Ce-Id header when it has one, else a new UUID):
ce-type org.kubeflow.serving.inference.request with the request body, and, only when the answer
is HTTP 200, org.kubeflow.serving.inference.response with the answer body; both carry the
REQUEST's content-type, ce-source (this server's URL), ce-time, ce-inferenceservicename,
ce-namespace, ce-component ("predictor"), ce-endpoint ("default") and ce-metadata ("{}"). One
attribute more than KServe: ce-modelversion, the answer's x-model-version (KServe's V1 answer
body does not name it). With a token (LOGGER_TOKEN, else APP_TOKEN), each POST has
`Authorization: Bearer <token>`; the token is never logged.

Never slows or fails a prediction: the middleware only copies the bodies and puts the pair on a
bounded queue (at most `queue_size` events and `queue_bytes` bytes); when it is full the events
are dropped and counted. One thread sends them, one POST each, `timeout_s` each, no retry: a slow
or dead sink fills the queue, and the predictor drops instead of waiting. Counted in
catdog_logger_events_total{outcome=queued|sent|dropped|failed} (failed: the sink did not answer
2xx, or could not be reached). The bodies of requests over the server's body limit are not read,
so not logged; other routes (metadata, health, :explain) are not logged.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import httpx
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from prometheus_client import Counter

logger = logging.getLogger("catdog.serving.logger")
REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
EVENTS = Counter("catdog_logger_events_total", "Payload-logger CloudEvents of this predictor, by outcome",
                 ["outcome"])
_STOP = object()


class PayloadLogger:
    """Sends logger events from a bounded queue, on one thread."""

    def __init__(self, url: str, token: str | None = None, inference_service: str = "catdog", namespace: str = "",
                 source: str = "http://127.0.0.1", queue_size: int = 100, queue_bytes: int = 64 * 1024 * 1024,
                 timeout_s: float = 5.0, transport: httpx.BaseTransport | None = None):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the logger URL must be http:// or https://, got {url!r}")
        self.url = url
        self.shown_url = redact_url(url)
        self.attributes = {"specversion": "1.0", "source": source, "inferenceservicename": inference_service,
                           "namespace": namespace, "component": "predictor", "endpoint": "default", "metadata": "{}"}
        self.queue_bytes = queue_bytes
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._queued_bytes = 0
        self._lock = threading.Lock()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(timeout=timeout_s, headers=headers, transport=transport, trust_env=False)
        self._thread: threading.Thread | None = None
        self.counts = {"queued": 0, "sent": 0, "dropped": 0, "failed": 0}

    def _count(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] += n
        EVENTS.labels(outcome).inc(n)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._send_all, name="payload-logger", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Send what is queued for at most `timeout_s`, then stop."""
        if self._thread is not None:
            try:
                self._queue.put(_STOP, timeout=timeout_s)
            except queue.Full:
                pass
            self._thread.join(timeout=timeout_s)
            self._thread = None
        self._http.close()

    def submit(self, event_id: str, content_type: str | None, request_body: bytes, started: datetime,
               response_body: bytes | None, model_version: str | None) -> bool:
        """Queue the request event and, when the answer was a 200 (`response_body` not None), the
        response event; both or neither. False when the queue is full (counted as dropped)."""
        events = [self._event(event_id, REQUEST_TYPE, content_type, request_body, started, model_version)]
        if response_body is not None:
            events.append(self._event(event_id, RESPONSE_TYPE, content_type, response_body, datetime.now(UTC),
                                      model_version))
        size = len(request_body) + len(response_body or b"")
        with self._lock:
            fits = (self._queue.maxsize - self._queue.qsize() >= len(events)
                    and self._queued_bytes + size <= self.queue_bytes)
            if fits:
                self._queued_bytes += size
                for event in events:
                    self._queue.put_nowait(event)
        if not fits:
            self._count("dropped", len(events))
            return False
        self._count("queued", len(events))
        return True

    def _event(self, event_id: str, kind: str, content_type: str | None, body: bytes, moment: datetime,
               model_version: str | None) -> CloudEvent:
        attributes = {**self.attributes, "id": event_id, "type": kind, "time": moment.isoformat()}
        if content_type:
            attributes["datacontenttype"] = content_type
        if model_version:
            attributes["modelversion"] = model_version
        return CloudEvent(attributes, body)

    def _send_all(self) -> None:
        while True:
            event = self._queue.get()
            if event is _STOP:
                return
            with self._lock:
                self._queued_bytes -= len(event.get_data() or b"")
            self._send(event)

    def _send(self, event: CloudEvent) -> None:
        headers, body = to_binary(event, data_marshaller=lambda data: data)
        try:
            response = self._http.post(self.url, headers=headers, content=body)
        except httpx.HTTPError as exc:
            self._count("failed")
            logger.warning("logger event %s not delivered: %s", event["id"][:40], type(exc).__name__)
            return
        if 200 <= response.status_code < 300:
            self._count("sent")
        else:
            self._count("failed")
            logger.warning("logger event %s refused by the sink: HTTP %d %s", event["id"][:40], response.status_code,
                           response.text[:200])


def is_inference(method: str, path: str, extra_routes: tuple[str, ...] = ()) -> bool:
    return method == "POST" and (path.endswith(":predict") or path.endswith("/infer") or path in extra_routes)


class PayloadLoggingMiddleware:
    """Copies the request and response bodies of inference routes to `payload_logger` (after the
    answer is sent; the prediction never waits for the logger)."""

    def __init__(self, app, payload_logger: PayloadLogger, extra_routes: tuple[str, ...] = ()):
        self.app = app
        self.payload_logger = payload_logger
        self.extra_routes = tuple(r for r in extra_routes if r)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not is_inference(scope["method"], scope["path"], self.extra_routes):
            return await self.app(scope, receive, send)
        started = datetime.now(UTC)
        request_chunks: list[bytes] = []
        request_done = False
        answer = {"status": None, "chunks": [], "version": None}

        async def logged_receive():
            nonlocal request_done
            message = await receive()
            if message["type"] == "http.request":
                request_chunks.append(message.get("body", b""))
                request_done = request_done or not message.get("more_body", False)
            return message

        async def logged_send(message):
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == b"x-model-version":
                        answer["version"] = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                answer["chunks"].append(message.get("body", b""))
            await send(message)

        await self.app(scope, logged_receive, logged_send)
        if not request_done:  # refused before its body was read (413, 408): nothing to log
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}
        event_id = headers.get("ce-id") or str(uuid.uuid4())
        response = b"".join(answer["chunks"]) if answer["status"] == 200 else None
        self.payload_logger.submit(event_id, headers.get("content-type"), b"".join(request_chunks), started,
                                   response, answer["version"])


def redact_url(url: str) -> str:
    """`url` without its user:password@ (for logs)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def token_from_environment(environ) -> str | None:
    """LOGGER_TOKEN, else APP_TOKEN (the app's write token, which its sink accepts)."""
    return environ.get("LOGGER_TOKEN") or environ.get("APP_TOKEN") or None
