"""Trends of the predictor and the app over time: request rate, error ratio, latency p50/p99, uptime.

    prometheus_trends(url, window_s, step_s)   from Prometheus (PROMETHEUS_URL): the recording rules of
                                               manifests/monitoring/rules.yaml, through /api/v1/query_range
    History(max_age_s, interval_s)             without Prometheus: a bounded in-memory list of scrapes
      .add(service, sample) / .trends(window_s, step_s, now)
    TrendRecorder(history, predictor_text, interval_s).start() / .stop()
                                               scrapes both every interval_s in a daemon thread
    predictor_sample(text, t) / app_sample(text, t)   one scrape of /metrics text -> Sample
    Trends(settings, predictor_text).start(background) / .close() / .read(window)
                                               what the app runs (FeedbackService.trends, GET /api/trends):
                                               Prometheus when PROMETHEUS_URL is set, else a History and
                                               its TrendRecorder every TRENDS_INTERVAL_S (window: WINDOWS)

All three answer the same shape, for the dashboard (Trends.read adds "window",
"now" (the server's time of the answer), "interval_s" (memory) and "prometheus_url" (without user:password@)):
    {"source": "prometheus" | "memory", "window_s", "step_s",
     "services": {"predictor" | "app": {"points": [{"t", "rate", "error_ratio", "p50_s", "p99_s"}],
                                       "uptime_s", "error"}}}
t: unix seconds; rate: requests per second; error_ratio: 5xx answers / answers (None without
answers); p50_s/p99_s: None without requests in the step. What is counted matches the rules:
predictor requests = catdog_inference_requests_total, answers = catdog_http_responses_total (5xx by
code), latency = catdog_inference_seconds{verb="predict"}; app requests and answers =
catdog_app_request_seconds_count without route /metrics (5xx by status_class), latency = its buckets.
Prometheus' points are its 5-minute rules sampled every step_s; memory points are the differences
between scrapes step_s apart (a counter that went down: the process restarted, counted from zero as
rate() does). The history holds at most max_age_s / interval_s + 1 scrapes per service (a day at
30 s: 2881); it is this process's own, so each app replica keeps one.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from feedback.monitoring.metrics import APP_REGISTRY
from feedback.periodic import Periodic
from feedback.predictor_client.metrics import histogram_quantile
from feedback.settings import redact

SERVICES = ("predictor", "app")
DAY_S = 24 * 3600
PROMETHEUS_TIMEOUT_S = 5.0
# the recording rules per service and point field (rules.yaml); uptime is an instant query
RULES = {
    "predictor": {"rate": 'job:catdog_inference_requests:rate5m{job="catdog-predictor"}',
                  "error_ratio": 'job:catdog_http_errors:ratio_rate5m{job="catdog-predictor"}',
                  "p50_s": 'job_verb:catdog_inference_seconds:p50_5m{job="catdog-predictor", verb="predict"}',
                  "p99_s": 'job_verb:catdog_inference_seconds:p99_5m{job="catdog-predictor", verb="predict"}'},
    "app": {"rate": 'job:catdog_app_requests:rate5m{job="catdog-feedback"}',
            "error_ratio": 'job:catdog_app_errors:ratio_rate5m{job="catdog-feedback"}',
            "p50_s": 'job:catdog_app_request_seconds:p50_5m{job="catdog-feedback"}',
            "p99_s": 'job:catdog_app_request_seconds:p99_5m{job="catdog-feedback"}'},
}
JOBS = {"predictor": "catdog-predictor", "app": "catdog-feedback"}
# the dashboard's windows -> (window_s, step_s): a point a minute over an hour, every 10 minutes over a day
# (memory: never finer than the scrape interval)
WINDOWS = {"1h": (3600.0, 60.0), "1d": (float(DAY_S), 600.0)}


@dataclass(frozen=True)
class Sample:
    t: float  # unix seconds of the scrape
    requests: float  # cumulative
    answers: float  # cumulative answers (the error ratio's denominator)
    errors: float  # cumulative 5xx answers
    buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count), ascending, +Inf last
    started: float | None  # process_start_time_seconds


def _sample(text: str, t: float, requests_of, answer_of, bucket_of) -> Sample:
    requests = answers = errors = 0.0
    by_bound: dict[float, float] = {}
    started = None
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "process_start_time_seconds":
                started = s.value
            requests += requests_of(s)
            answer = answer_of(s)  # None: not an answer; else whether it is a 5xx
            if answer is not None:
                answers += s.value
                errors += s.value if answer else 0.0
            if bucket_of(s):
                bound = float(s.labels["le"])
                by_bound[bound] = by_bound.get(bound, 0.0) + s.value
    return Sample(t, requests, answers, errors, tuple(sorted(by_bound.items())) or ((math.inf, 0.0),), started)


def predictor_sample(text: str, t: float) -> Sample:
    return _sample(text, t,
                   lambda s: s.value if s.name == "catdog_inference_requests_total" else 0.0,
                   lambda s: s.labels["code"].startswith("5") if s.name == "catdog_http_responses_total" else None,
                   lambda s: s.name == "catdog_inference_seconds_bucket" and s.labels.get("verb") == "predict")


def app_sample(text: str, t: float) -> Sample:
    def counted(s, name):
        return s.name == name and s.labels.get("route") != "/metrics"

    return _sample(text, t,
                   lambda s: s.value if counted(s, "catdog_app_request_seconds_count") else 0.0,
                   lambda s: s.labels["status_class"] == "5xx" if counted(s, "catdog_app_request_seconds_count") else None,
                   lambda s: counted(s, "catdog_app_request_seconds_bucket"))


def between(a: Sample, b: Sample) -> dict:
    """One trend point from two scrapes of the same service (a before b)."""
    restarted = b.started != a.started or b.requests < a.requests or b.answers < a.answers
    base = Sample(a.t, 0.0, 0.0, 0.0, (), b.started) if restarted else a
    before = dict(base.buckets)
    buckets = [(bound, count - before.get(bound, 0.0)) for bound, count in b.buckets]
    answers = b.answers - base.answers
    quantile = (lambda q: histogram_quantile(q, buckets)) if buckets and math.isinf(buckets[-1][0]) else (lambda q: None)
    return {"t": b.t, "rate": (b.requests - base.requests) / (b.t - a.t),
            "error_ratio": (b.errors - base.errors) / answers if answers > 0 else None,
            "p50_s": quantile(0.5), "p99_s": quantile(0.99)}


class History:
    """The last max_age_s of scrapes per service, at most max_age_s / interval_s + 1 each."""

    def __init__(self, max_age_s: float = DAY_S, interval_s: float = 30.0):
        self.max_age_s = max_age_s
        size = int(max_age_s / interval_s) + 1
        self._samples = {service: deque(maxlen=size) for service in SERVICES}
        self._errors: dict[str, str | None] = dict.fromkeys(SERVICES)
        self._lock = threading.Lock()

    def add(self, service: str, sample: Sample | None, error: str | None = None) -> None:
        """A scrape (or the reason there is none this time: shown with the trends)."""
        with self._lock:
            if sample is not None:
                samples = self._samples[service]
                if samples and sample.t <= samples[-1].t:
                    return  # the clock went back: keep the times increasing
                samples.append(sample)
            self._errors[service] = error

    def trends(self, window_s: float, step_s: float, now: float | None = None) -> dict:
        now = time.time() if now is None else now
        services = {}
        with self._lock:
            for service in SERVICES:
                chosen: list[Sample] = []
                for sample in self._samples[service]:
                    if sample.t >= now - window_s - step_s and (not chosen or sample.t - chosen[-1].t >= step_s * 0.999):
                        chosen.append(sample)
                last = self._samples[service][-1] if self._samples[service] else None
                services[service] = {
                    "points": [between(a, b) for a, b in zip(chosen, chosen[1:]) if b.t >= now - window_s],
                    "uptime_s": now - last.started if last is not None and last.started else None,
                    "error": self._errors[service]}
        return {"source": "memory", "window_s": window_s, "step_s": step_s, "services": services}


class TrendRecorder:
    """Scrapes the predictor (predictor_text: its /metrics text, e.g.
    feedback.predictor_client.metrics.PredictorMetrics(settings).text) and this app (its own registry, in process) every interval_s into `history`."""

    def __init__(self, history: History, predictor_text: Callable[[], str], interval_s: float = 30.0,
                 clock: Callable[[], float] = time.time):
        self.history = history
        self.predictor_text = predictor_text
        self.interval_s = interval_s
        self.clock = clock
        self._loop = Periodic("feedback-trends", self.scrape, interval_s, first_now=True)

    def scrape(self) -> None:
        now = self.clock()
        self.history.add("app", app_sample(generate_latest(APP_REGISTRY).decode(), now))
        try:
            self.history.add("predictor", predictor_sample(self.predictor_text(), now))
        except Exception as exc:  # down, slow, not ours: no point this round, the reason is shown
            self.history.add("predictor", None, f"{type(exc).__name__}: {str(exc)[:200]}")

    def start(self) -> None:
        """Scrape at once, then every interval_s (feedback.periodic: a failed scrape is logged)."""
        self._loop.start()

    def stop(self) -> None:
        self._loop.close(timeout_s=10)


def prometheus_trends(url: str, window_s: float, step_s: float, now: float | None = None,
                      transport: httpx.BaseTransport | None = None) -> dict:
    """The same trends from Prometheus' recording rules (query_range) and process start times; a
    service whose queries fail carries the reason in "error" (never raises)."""
    now = time.time() if now is None else now
    services = {}
    with httpx.Client(base_url=url.rstrip("/"), timeout=PROMETHEUS_TIMEOUT_S, transport=transport) as client:
        def get(path: str, **params) -> list:
            response = client.get(path, params=params)
            body = response.json()
            if response.status_code != 200 or body.get("status") != "success":
                raise ValueError(f"Prometheus answered {response.status_code}: {body.get('error', '')[:200]}")
            return body["data"]["result"]

        for service, rules in RULES.items():
            points: dict[float, dict] = {}
            try:
                for field, expr in rules.items():
                    for series in get("/api/v1/query_range", query=expr, start=now - window_s, end=now, step=step_s):
                        for t, value in series["values"]:
                            number = float(value)
                            points.setdefault(float(t), dict.fromkeys(("rate", "error_ratio", "p50_s", "p99_s")))[
                                field] = None if math.isnan(number) else number
                started = get("/api/v1/query", query=f'max(process_start_time_seconds{{job="{JOBS[service]}"}})', time=now)
                error = None
            except (httpx.HTTPError, ValueError) as exc:
                started, error = [], f"{type(exc).__name__}: {str(exc)[:200]}"
            services[service] = {"points": [{"t": t, **values} for t, values in sorted(points.items())],
                                 "uptime_s": now - float(started[0]["value"][1]) if started else None,
                                 "error": error}
    return {"source": "prometheus", "window_s": window_s, "step_s": step_s, "services": services}


class Trends:
    """The app's trends: Prometheus at settings.prometheus_url when set (no scraping thread), else a
    day of History that a TrendRecorder fills every settings.trends_interval_s from predictor_text
    (the predictor's /metrics text) and this app's own registry. clock: the time of scrapes and reads."""

    def __init__(self, settings, predictor_text: Callable[[], str], clock: Callable[[], float] = time.time):
        self.prometheus_url = settings.prometheus_url or None
        self.interval_s = settings.trends_interval_s
        self.clock = clock
        self.history = None if self.prometheus_url else History(DAY_S, self.interval_s)
        self.recorder = None if self.history is None else TrendRecorder(
            self.history, predictor_text, self.interval_s, clock=lambda: self.clock())

    def start(self, background: bool = True) -> None:
        """Start the recorder's thread (memory source, `background` only); it scrapes at once."""
        if self.recorder is not None and background:
            self.recorder.start()

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.stop()

    def read(self, window: str) -> dict:
        """The trends of a window of WINDOWS; never raises for Prometheus being down (per service "error")."""
        window_s, step_s = WINDOWS[window]
        now = self.clock()
        if self.prometheus_url:
            result = prometheus_trends(self.prometheus_url, window_s, step_s, now=now)
        else:
            result = self.history.trends(window_s, max(step_s, self.interval_s), now=now)
        return {**result, "window": window, "now": now, "interval_s": None if self.prometheus_url else self.interval_s,
                "prometheus_url": redact(self.prometheus_url) if self.prometheus_url else None}
