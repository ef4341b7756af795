"""The feedback app's own Prometheus metrics, served on GET /metrics (text exposition format).

    install(app, service, routes) the /metrics route + the request middleware (outermost), on one app
    count_upload(source)          a photo stored with its prediction (api, page, endpoint) or a labelled
                                  photo added by upload-data (source "upload-data")
    count_verdict(verdict, predicted)   a person's verdict on a prediction
    LOGGER_EVENTS                 KServe payload-logger CloudEvents received: .labels(outcome="stored"|"rejected")

Counters and the request histogram live in APP_REGISTRY, a registry of this module's own (not
prometheus_client's default one, which the predictor's serving/metrics.py fills: a test process
that runs both keeps their /metrics apart). Every name starts with `catdog_app_`:

| metric | type | labels | what |
| --- | --- | --- | --- |
| catdog_app_uploads_total | counter | source | photos stored with a prediction (api, page, endpoint), labelled photos stored by upload-data |
| catdog_app_verdicts_total | counter | verdict, outcome | verdicts on predictions: verdict = a label or "neither"; outcome confirmed, corrected or neither |
| catdog_app_logger_events_total | counter | outcome | payload-logger events: stored or rejected (incremented by the logger sink) |
| catdog_app_request_seconds | histogram | method, route, status_class | every HTTP request, by route TEMPLATE (/api/predictions/{prediction_id}/validation; "unmatched" for paths no route takes) and status class 2xx..5xx |
| catdog_app_review_queue_size | gauge | | photos with a prediction and no verdict |
| catdog_app_contested_photos | gauge | | photos whose reviewers' latest verdicts differ (feedback/monitoring/agreement.py) |
| catdog_app_unresolved_photos | gauge | | of which tied: no label, in no dataset until someone else judges them (the second-opinion queue) |
| catdog_app_reviewer_alpha | gauge | | Krippendorff's alpha between reviewers (absent while it is undefined: under 5 shared photos, or no disagreement possible) |
| catdog_app_training_runs | gauge | state | retraining runs in the database per state (queued, running, succeeded, failed, cancelled) |
| catdog_app_drift_flagged | gauge | | 1 when the dashboard's drift test flags drift (feedback.monitoring.dashboard.drift_test), else 0 |
| catdog_app_drift_p_value | gauge | | that test's p-value (absent while there is not enough data) |
| catdog_app_drift_recent_predictions | gauge | | the champion's recent predictions the test used |
| catdog_app_verdict_accuracy | gauge | model_version | the champion's accuracy on people's cat/dog verdicts (absent without any) |
| catdog_app_verdict_predictions | gauge | model_version | the champion's predictions with such a verdict (the accuracy's n) |
| catdog_app_state_up | gauge | part | 1 when that part (database: queue, runs; registry: drift, accuracy) could be read, 0 when not (logged) |
| process_* | | | the app process (start time: uptime) |

The gauges are read from the database at scrape time (so every replica reports the same numbers:
aggregate them with max, not sum), at most once per STATE_TTL_S per app; the drift test and the
accuracy read the model registry too. The histogram and counters are per process (sum them).
Request errors are the histogram's counts with status_class 5xx (4xx: the client's). A 500 that
an unexpected exception becomes is counted too (the middleware sees the exception go by).

/metrics is a read route: no APP_TOKEN, no same-origin check (Prometheus sends neither); it
exposes counts and rates only: no URL, path, token, file name or photo.
"""

from __future__ import annotations

import logging
import threading
import time

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client import disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from starlette.routing import Match, Mount, Route

from catdog.model_files import EVALUATION_FILE
from catdog.registry import ModelRegistry
from feedback.monitoring import dashboard
from feedback.monitoring.agreement import read_agreement
from feedback.store import dashboard_queries, queries
from feedback.store.tables import NEITHER, RUN_STATES, TrainingRun
from feedback.settings import redact

logger = logging.getLogger("catdog.feedback")
STATE_TTL_S = 10.0  # the database gauges are read at most this often per app (scrapes in between reuse them)
UNMATCHED = "unmatched"  # the route label of paths no route takes (scanners: bounded cardinality)

disable_created_metrics()  # as serving/metrics.py: no *_created series (half the lines, no information)
APP_REGISTRY = CollectorRegistry()
ProcessCollector(registry=APP_REGISTRY)
UPLOADS = Counter("catdog_app_uploads_total",
                  "Photos stored with a prediction (source api, page or endpoint) or labelled by upload-data",
                  ["source"], registry=APP_REGISTRY)
VERDICTS = Counter("catdog_app_verdicts_total",
                   "People's verdicts on predictions, by verdict (a label or neither) and outcome "
                   "(confirmed, corrected, neither)", ["verdict", "outcome"], registry=APP_REGISTRY)
LOGGER_EVENTS = Counter("catdog_app_logger_events_total",
                        "KServe payload-logger events received, by outcome (stored or rejected)",
                        ["outcome"], registry=APP_REGISTRY)
for _outcome in ("stored", "rejected"):
    LOGGER_EVENTS.labels(_outcome)  # both series exist from the start: rate() and ratios see 0, not nothing
REQUEST_SECONDS = Histogram(
    "catdog_app_request_seconds",
    "HTTP requests of the app, by method, route template and status class (2xx..5xx), from the first "
    "byte in to the last byte out",
    ["method", "route", "status_class"], registry=APP_REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


def count_upload(source: str) -> None:
    UPLOADS.labels(source).inc()


def count_verdict(verdict: str, predicted: str | None) -> None:
    outcome = "neither" if verdict == NEITHER else "confirmed" if verdict == predicted else "corrected"
    VERDICTS.labels(verdict, outcome).inc()


# -- the request middleware --------------------------------------------------------------------------
def route_template(routes, scope) -> str:
    """The path template of the route that takes this request (a full match, else a partial one:
    405), or UNMATCHED."""
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return getattr(route, "path", UNMATCHED) or "/"
        if match is Match.PARTIAL and partial is None:
            partial = route
    return getattr(partial, "path", UNMATCHED) if partial is not None else UNMATCHED


class RequestMetrics:
    """Pure ASGI middleware: observes every HTTP request's time in REQUEST_SECONDS. Added outermost
    of the app's own middlewares, so requests the guards or the body limit refuse count too."""

    def __init__(self, app, routes):
        self.app = app
        self.routes = routes  # the routes (APIRoute, Route, Mount) whose templates label requests

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = route_template(self.routes, scope)
        start = time.perf_counter()
        status = [500]  # an exception before the response starts: Starlette answers 500 outside us

        async def watching(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watching)
        finally:
            REQUEST_SECONDS.labels(scope["method"], route, f"{status[0] // 100}xx").observe(time.perf_counter() - start)


# -- the gauges read from the database -----------------------------------------------------------------
class StateCollector:
    """A prometheus_client custom collector over one FeedbackService's database and registry."""

    def __init__(self, service):
        self.service = service
        self._lock = threading.Lock()
        self._cached: tuple[float, list] | None = None

    def collect(self):
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > STATE_TTL_S:
                self._cached = (time.monotonic(), self._read())
            return list(self._cached[1])

    def _read(self) -> list:
        up = GaugeMetricFamily("catdog_app_state_up", "1 when this part of the app's state (database, registry) "
                               "could be read for the gauges, else 0 (logged)", labels=["part"])
        families: list = []
        context: dict = {}
        for part, read in (("database", self._database), ("registry", self._registry)):
            try:
                families += read(context)
            except Exception as exc:  # cannot be read now: say so, keep the other part and the counters
                logger.warning("/metrics: cannot read the app's %s: %s: %s", part, type(exc).__name__, _short(exc))
                up.add_metric([part], 0)
            else:
                up.add_metric([part], 1)
        return [*families, up]

    def _database(self, context: dict) -> list:
        with self.service.db.read() as session:
            queue = queries.queue_length(session)
            runs = dict(session.execute(select(TrainingRun.state, func.count()).group_by(TrainingRun.state)).all())
            context["accuracy"] = {row["model_version"]: row for row in dashboard.validated_accuracy(session)}
            reviewers = read_agreement(session)
        by_state = GaugeMetricFamily("catdog_app_training_runs", "Retraining runs in the database, by state",
                                     labels=["state"])
        for state in RUN_STATES:
            by_state.add_metric([state], runs.get(state, 0))
        families = [GaugeMetricFamily("catdog_app_review_queue_size", "Photos with a prediction and no verdict",
                                      value=queue), by_state,
                    GaugeMetricFamily("catdog_app_contested_photos", "Photos whose reviewers' latest verdicts differ",
                                      value=reviewers["contested"]),
                    GaugeMetricFamily("catdog_app_unresolved_photos", "Contested photos whose reviewers tie: no label "
                                      "until another person judges them", value=reviewers["unresolved"])]
        if reviewers["alpha"] is not None:
            families.append(GaugeMetricFamily("catdog_app_reviewer_alpha", "Krippendorff's alpha (nominal) between "
                                              "reviewers on the photos two or more judged", value=reviewers["alpha"]))
        return families

    def _registry(self, context: dict) -> list:
        """The champion's drift test and accuracy (the database part read first: its accuracy rows)."""
        if "accuracy" not in context:
            raise RuntimeError("the database part failed")
        registry = ModelRegistry(self.service.registry_uri)
        champion = registry.champion()
        recent, reference = [], []
        if champion is not None:
            with self.service.db.read() as session:
                recent = [c for _, c, _ in dashboard_queries.recent_predictions(session, str(champion["version"]), dashboard.RECENT_LIMIT)]
            evaluation = dashboard.version_json(registry, champion["version"], EVALUATION_FILE) or {}
            reference = evaluation.get("test_confidences") or []
        drift = dashboard.drift_test(recent, reference)
        families = [
            GaugeMetricFamily("catdog_app_drift_flagged", "1 when the dashboard's drift test (Kolmogorov-Smirnov, "
                              "champion's recent confidences vs its test split) flags drift, else 0",
                              value=1 if drift["drift"] else 0),
            GaugeMetricFamily("catdog_app_drift_recent_predictions",
                              "The champion's recent predictions the drift test used", value=drift["n_recent"])]
        if drift["p_value"] is not None:
            families.append(GaugeMetricFamily("catdog_app_drift_p_value", "The drift test's p-value",
                                              value=drift["p_value"]))
        version = str(champion["version"]) if champion is not None else None
        if version in context["accuracy"]:
            row = context["accuracy"][version]
            value = GaugeMetricFamily("catdog_app_verdict_accuracy",
                                      "The champion's accuracy on people's cat/dog verdicts", labels=["model_version"])
            value.add_metric([version], row["accuracy"])
            n = GaugeMetricFamily("catdog_app_verdict_predictions",
                                  "The champion's predictions with a cat/dog verdict", labels=["model_version"])
            n.add_metric([version], row["n"])
            families += [value, n]
        return families


def _short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines() or [""]
    return redact(lines[0][:200])


# -- wiring ---------------------------------------------------------------------------------------
router = APIRouter()


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus text format: this module's counters and histogram, then this app's state gauges."""
    body = generate_latest(APP_REGISTRY) + generate_latest(request.app.state.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def install(app, service, routes) -> None:
    """GET /metrics and the request middleware on `app` (call it after the app's other middlewares:
    the last one added is the outermost). `routes`: the routers' routes (FastAPI keeps an included
    router as one opaque entry of app.router.routes, so the templates come from the routers); the
    app's own Route and Mount entries (/openapi.json, /static...) are added here."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(service))
    app.state.metrics_registry = registry
    app.include_router(router)
    own = [route for route in app.router.routes if isinstance(route, (Route, Mount))]
    app.add_middleware(RequestMetrics, routes=[*routes, *router.routes, *own])
