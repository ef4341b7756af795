"""The sink of KServe's payload logger: predictions made straight at the serving endpoint enter the
loop (history, review queue, dashboard, drift) like the app's own uploads, with source "endpoint".

    EndpointEvents(service).receive(headers, body) -> Outcome     (feedback/web/routers/events.py: the route)

The events (KServe's agent, pkg/logger; and serving/payload_logger.py, which sends the same):
CloudEvents 1.0 in binary content mode, read with the `cloudevents` SDK. `ce-type` is
org.kubeflow.serving.inference.request (data: the request body as the client sent it) or
org.kubeflow.serving.inference.response (data: the answer; sent only for HTTP 200); the two
events of one inference share `ce-id`. Extensions: ce-inferenceservicename, ce-namespace,
ce-component, ce-endpoint, ce-metadata (JSON of the request headers the InferenceService's
logger.metadataHeaders names); serving/payload_logger.py adds ce-modelversion. The data's
content-type is the REQUEST's in both events (KServe's agent does so).

Pairing: the first event of a ce-id waits (answer 202) for the other, which may come first or
second, at most LOGGER_PAIR_TIMEOUT_S; at most LOGGER_MAX_PENDING events and PENDING_BYTES of
bodies wait (the oldest is dropped, counted "evicted"); one that waits too long is dropped and counted "expired" (KServe sends no
response for a failed inference, so its request ends so). The pending map is this process's: with
several app replicas, both events of an inference must reach the same one (the Service's
sessionAffinity: ClientIP, since both come from the same predictor pod).
Storing: every photo of the batch with its prediction, in one transaction (service
add_endpoint_predictions); batches of n instances make n predictions, each with the
InferenceService, ce-id and its index. A pair stored before (same ce-id: a resent pair, here or on
another replica) is stored once ("duplicate", answer 200). The model version: a V2 answer's, else
the ce-modelversion extension, else the version the app's predictor reports now (KServe's V1
answer does not name it); the model name: a V2 answer's, else PREDICTOR_MODEL.
Answers never ask for a retry of what cannot succeed: 202 pending, 201 stored, 200 duplicate or
ignored (not an inference: KServe also forwards metadata calls; or the app's own call to the
predictor, whose Ce-Id header starts with catdog-feedback-, which the logger keeps as ce-id), 400 not a CloudEvent or of an
unknown type, 422 a pair that cannot be read (photos, predictions, counts that differ, labels
the app does not know, a photo it refuses); nothing is stored then. Only the app's own failures
(database, photo store) answer 503, as elsewhere. Every refusal is counted and logged.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from cloudevents.exceptions import GenericException
from cloudevents.http import from_http

from feedback.labelling.endpoint_payloads import NotInference, Unreadable, request_images, response_predictions
from feedback.store.photos import PhotoRejected
from feedback.predictor_client.client import OWN_EVENT_PREFIX
from feedback.labelling.inputs import DuplicateEvent
from feedback.labelling.service import FeedbackService
from feedback.monitoring import metrics as app_metrics
from feedback.predictor_client.client import PredictorAnswer

logger = logging.getLogger("catdog.feedback.events")
REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
MAX_EVENT_ID = 128  # feedback.store.tables.EVENT_ID_LENGTH
RECENT_IDS = 4096  # ce-ids finished lately: a late duplicate of either event is known at once
# the outcomes catdog_app_logger_events_total counts as "rejected": events refused or dropped unstored
REJECTED = frozenset({"malformed", "unreadable", "photo_rejected", "unauthorized", "store_failed", "expired", "evicted"})
PENDING_BYTES = 256 * 1024 * 1024  # the bodies waiting for their partner, at most (the oldest go first)


@dataclass(frozen=True)
class LoggedEvent:
    id: str
    type: str
    data: bytes
    inference_service: str | None
    model_version: str | None
    metadata: dict | None
    time: datetime | None

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class Outcome:
    status: int  # the HTTP answer
    result: str  # pending, stored, duplicate, ignored, or the reason of a refusal
    detail: str = ""
    predictions: tuple[str, ...] = ()

    def body(self) -> dict:
        return {"result": self.result, **({"detail": self.detail} if self.detail else {}),
                **({"predictions": list(self.predictions)} if self.predictions else {})}


def parse_event(headers: Mapping[str, str], body: bytes) -> LoggedEvent:
    """One logger CloudEvent; Unreadable when it is none or of another type."""
    try:
        event = from_http(dict(headers), body, data_unmarshaller=lambda data: data)
    except GenericException as exc:
        raise Unreadable(f"not a CloudEvent ({type(exc).__name__}: {str(exc)[:200]})") from None
    attributes = event.get_attributes()
    if attributes.get("type") not in (REQUEST_TYPE, RESPONSE_TYPE):
        raise Unreadable(f"ce-type {str(attributes.get('type'))[:100]!r} is neither {REQUEST_TYPE} nor {RESPONSE_TYPE}")
    event_id = str(attributes.get("id") or "")
    if not event_id or len(event_id) > MAX_EVENT_ID or "\x00" in event_id:
        raise Unreadable(f"ce-id must be 1 to {MAX_EVENT_ID} characters")
    data = event.get_data()
    if isinstance(data, str):
        data = data.encode()
    elif isinstance(data, (dict, list)):  # structured content mode: the data was JSON inside the event
        data = json.dumps(data).encode()
    elif data is not None and not isinstance(data, (bytes, bytearray)):
        raise Unreadable(f"the event's data is a {type(data).__name__}, not a body")
    metadata = attributes.get("metadata")
    try:
        metadata = json.loads(metadata) if metadata else None
    except ValueError:
        metadata = None  # KServe's header metadata: only read for the binary header's length
    moment = attributes.get("time")
    try:
        moment = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    except ValueError:
        moment = None
    name = attributes.get("inferenceservicename")
    return LoggedEvent(event_id, attributes["type"], bytes(data or b""), str(name)[:253] if name else None,
                       attributes.get("modelversion"), metadata if isinstance(metadata, dict) else None, moment)


class PendingEvents:
    """Events waiting for their partner: bounded in number, each for at most `timeout_s`."""

    def __init__(self, timeout_s: float, max_pending: int, count, clock=time.monotonic,
                 max_bytes: int = PENDING_BYTES):
        """count(outcome): called with "expired" or "evicted" for each event dropped unpaired."""
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        self._bytes = 0
        self.count = count
        self.clock = clock
        self._waiting: OrderedDict[str, tuple[float, LoggedEvent]] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._waiting)

    def expire(self) -> None:
        with self._lock:
            self._expire()

    def _expire(self) -> None:
        deadline = self.clock() - self.timeout_s
        while self._waiting and next(iter(self._waiting.values()))[0] < deadline:
            event_id, (_, event) = self._waiting.popitem(last=False)
            self._bytes -= event.size
            self.count("expired")
            logger.warning("logger event %s (%s) expired: its partner did not come within %g s "
                           "(LOGGER_PAIR_TIMEOUT_S)", event_id[:40], event.type.rsplit(".", 1)[-1], self.timeout_s)

    def offer(self, event: LoggedEvent) -> tuple[LoggedEvent, LoggedEvent] | str:
        """(request, response) when `event` completes a pair, else "pending" or "duplicate"."""
        with self._lock:
            self._expire()
            if event.id in self._finished:
                return "duplicate"
            waiting = self._waiting.get(event.id)
            if waiting is not None and waiting[1].type == event.type:
                return "duplicate"
            if waiting is not None:
                self.finish(event.id, locked=True)
                other = waiting[1]
                return (event, other) if event.type == REQUEST_TYPE else (other, event)
            self._waiting[event.id] = (self.clock(), event)
            self._bytes += event.size
            while len(self._waiting) > self.max_pending or (self._bytes > self.max_bytes and len(self._waiting) > 1):
                dropped, (_, old) = self._waiting.popitem(last=False)
                self._bytes -= old.size
                self.count("evicted")
                logger.warning("logger event %s dropped unpaired: more than %d events or %d MiB wait "
                               "(LOGGER_MAX_PENDING)", dropped[:40], self.max_pending, self.max_bytes >> 20)
            return "pending"

    def forget(self, event_id: str) -> None:
        with self._lock:
            self._finished.pop(event_id, None)

    def finish(self, event_id: str, locked: bool = False) -> None:
        """Remember `event_id` as done (a late event of it is a duplicate, or ignored)."""
        if not locked:
            with self._lock:
                return self.finish(event_id, locked=True)
        waiting = self._waiting.pop(event_id, None)
        if waiting is not None:
            self._bytes -= waiting[1].size
        self._finished[event_id] = None
        while len(self._finished) > RECENT_IDS:
            self._finished.popitem(last=False)


class EndpointEvents:
    """Receives logger events for one FeedbackService; counts every outcome (snapshot())."""

    def __init__(self, service: FeedbackService, clock=time.monotonic):
        self.service = service
        self.counts: Counter = Counter()
        settings = service.settings
        self.pending = PendingEvents(settings.logger_pair_timeout_s, settings.logger_max_pending, self.count, clock)

    def count(self, outcome: str, n: int = 1) -> None:
        """`n` more of this outcome: every count of the sink passes here (the hook for the app's
        Prometheus counter catdog_app_logger_events_total{outcome}; "predictions" counts rows, the
        others events)."""
        self.counts[outcome] += n
        if outcome == "stored":
            app_metrics.LOGGER_EVENTS.labels("stored").inc(n)
        elif outcome in REJECTED:
            app_metrics.LOGGER_EVENTS.labels("rejected").inc(n)
        elif outcome == "predictions":
            app_metrics.UPLOADS.labels("endpoint").inc(n)

    def reject(self, status: int, reason: str, detail: str, event_id: str | None = None) -> Outcome:
        self.count(reason)
        logger.warning("logger event%s refused (%s): %s", f" {event_id[:40]}" if event_id else "", reason, detail)
        return Outcome(status, reason, detail)

    def snapshot(self) -> dict:
        self.pending.expire()
        return {"counts": dict(sorted(self.counts.items())), "pending": len(self.pending)}

    def receive(self, headers: Mapping[str, str], body: bytes) -> Outcome:
        """One event: parse, pair, and when the pair is complete, read and store it (blocking: call
        from a worker thread)."""
        self.count("received")
        try:
            event = parse_event(headers, body)
        except Unreadable as exc:
            return self.reject(400, "malformed", str(exc))
        except Exception as exc:  # a body no rule above foresaw: still the sender's, never a 5xx
            logger.exception("logger event: unexpected error while parsing it")
            return self.reject(400, "malformed", f"{type(exc).__name__}: {str(exc)[:200]}")
        if event.id.startswith(OWN_EVENT_PREFIX):  # the app's own call to the predictor: stored already
            self.pending.finish(event.id)
            self.count("own")
            return Outcome(200, "ignored", "the app's own prediction (Ce-Id catdog-feedback-...), stored already")
        paired = self.pending.offer(event)
        if paired == "duplicate":
            self.count("duplicate")
            return Outcome(200, "duplicate", f"an event {event.id} of this type came before")
        if paired == "pending":
            self.count("pending")
            return Outcome(202, "pending", "waiting for the other event of this ce-id")
        return self.store(*paired)

    def store(self, request: LoggedEvent, response: LoggedEvent) -> Outcome:
        try:
            items = self._read(request, response)
        except NotInference as exc:
            self.count("ignored")
            return Outcome(200, "ignored", f"not an inference: {exc}")
        except Unreadable as exc:
            return self.reject(422, "unreadable", str(exc), request.id)
        except PhotoRejected as exc:
            return self.reject(422, "photo_rejected", str(exc), request.id)
        except Exception as exc:  # a body no rule foresaw: still the sender's, never a 5xx
            logger.exception("logger event %s: unexpected error while reading it", request.id[:40])
            return self.reject(422, "unreadable", f"{type(exc).__name__}: {str(exc)[:200]}", request.id)
        try:
            stored = self.service.add_endpoint_predictions(items, request.inference_service or response.inference_service,
                                                           request.id)
        except DuplicateEvent:
            self.count("duplicate")
            return Outcome(200, "duplicate", f"the predictions of {request.id} are stored already")
        except Exception:
            self.count("store_failed")  # the database or photo store: the app's handlers answer (503)
            self.pending.forget(request.id)  # the pair may be sent again
            raise
        self.count("stored")
        self.count("predictions", len(stored))
        return Outcome(201, "stored", predictions=tuple(p.id for p in stored))

    def _read(self, request: LoggedEvent, response: LoggedEvent) -> list:
        images = request_images(request.data, request.metadata)
        predictions = response_predictions(response.data, response.metadata)
        if len(images) != len(predictions):
            raise Unreadable(f"the request holds {len(images)} photo(s), the answer {len(predictions)} prediction(s)")
        labels = set(self.service.labels)
        unknown = sorted({label for p in predictions for label in p.probabilities} - labels)
        if unknown:
            raise Unreadable(f"the answer has label(s) {unknown} that this app does not know (LABELS)")
        try:  # as the logger timed the two events; 0 when they carry no (comparable) time
            latency = (response.time - request.time).total_seconds()
        except TypeError:
            latency = 0.0
        version = response.model_version or request.model_version
        answers = []
        for prediction in predictions:
            model_version = prediction.model_version or version
            if model_version is None:
                model_version = self.service.predictor_status().model_version
            answers.append(PredictorAnswer(prediction.label, prediction.probabilities,
                                           prediction.model_name or self.service.settings.predictor_model,
                                           model_version, max(latency, 0.0), None, prediction.ood_score,
                                           prediction.neither))
        return [(self.service.check(image), answer) for image, answer in zip(images, answers)]
