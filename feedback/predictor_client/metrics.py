"""The predictor's own numbers, read from its Prometheus /metrics (serving/metrics.py).

    histogram_quantile(q, buckets) -> float | None     Prometheus' estimate from cumulative buckets
    read_sample(text) -> MetricsSample                 latency buckets and request count, all series summed
    PredictorMetrics(settings).read() -> dict          scrape now; never raises
    PredictorMetrics(settings).text() -> str           its /metrics text (MetricsUnavailable: why not)

Latency: p50 and p99 of `catdog_inference_seconds` (decode + preprocess + ONNX Runtime time of one
request), summed over its label sets (model versions, protocols), cumulative since the predictor
started, estimated as Prometheus' histogram_quantile does: linear interpolation inside the bucket
that holds the rank (a rank in the +Inf bucket gives the largest finite bound).
Request rate: `catdog_inference_requests_total` between the last two scrapes; this process keeps
the previous (time, count), so the first scrape has no rate. A count that went down (the predictor
restarted) counts from zero, as Prometheus' rate() does. A Vertex AI endpoint has no /metrics; a
predictor that is down, slow or answers something else is "unavailable" with the reason.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from prometheus_client.parser import text_string_to_metric_families

from feedback.settings import Settings, redact

LATENCY_METRIC = "catdog_inference_seconds"
REQUESTS_METRIC = "catdog_inference_requests_total"
METRICS_TIMEOUT_S = 2.0
QUANTILES = {"p50_s": 0.5, "p99_s": 0.99}
VERTEX_REASON = "a Vertex AI endpoint has no Prometheus /metrics (see its Cloud Monitoring page)"


class MetricsUnavailable(ValueError):
    pass


@dataclass(frozen=True)
class MetricsSample:
    buckets: list[tuple[float, float]]  # (upper bound, cumulative count), ascending, +Inf last
    requests: float


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The q-quantile from cumulative (upper bound, count) buckets ending with +Inf; None without
    observations (Prometheus: NaN). Same rules as Prometheus' bucketQuantile."""
    if not 0 < q <= 1:
        raise ValueError(f"quantile {q} outside (0, 1]")
    if not buckets or not math.isinf(buckets[-1][0]):
        raise ValueError("the buckets must end with +Inf")
    total = buckets[-1][1]
    if total == 0:
        return None
    rank = q * total
    index = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
    if index == len(buckets) - 1:
        return buckets[-2][0] if len(buckets) > 1 else None
    if index == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, below = (0.0, 0.0) if index == 0 else buckets[index - 1]
    end, count = buckets[index]
    return start + (end - start) * (rank - below) / (count - below)


def read_sample(text: str) -> MetricsSample:
    """Latency buckets and the request count of a /metrics text; MetricsUnavailable when it has neither."""
    by_bound: dict[float, float] = {}
    requests = None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == f"{LATENCY_METRIC}_bucket":
                    bound = float(sample.labels["le"])
                    by_bound[bound] = by_bound.get(bound, 0.0) + sample.value
                elif sample.name == REQUESTS_METRIC:
                    requests = (requests or 0.0) + sample.value
    except (ValueError, KeyError, TypeError) as exc:
        raise MetricsUnavailable(f"its /metrics cannot be parsed ({type(exc).__name__}: {exc})") from None
    if not by_bound or requests is None:  # prometheus_client exports no series before the first request
        raise MetricsUnavailable(f"its /metrics has no {LATENCY_METRIC} or {REQUESTS_METRIC} yet "
                                 "(no prediction since it started, or not the catdog predictor)")
    return MetricsSample(sorted(by_bound.items()), requests)


def request_rate(previous: tuple[float, float] | None, now: float, requests: float) -> float | None:
    """Requests per second since the previous (time, count); None without one."""
    if previous is None or now <= previous[0]:
        return None
    before = previous[1] if requests >= previous[1] else 0.0  # a restart reset the counter
    return (requests - before) / (now - previous[0])


class PredictorMetrics:
    """Scrapes PREDICTOR_URL/metrics and remembers the previous request count for the rate."""

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.url = f"{settings.predictor_base_url}/metrics"  # shown: no user:password@ (sent as basic auth)
        self._auth = settings.predictor_auth
        self.protocol = settings.predictor_protocol
        self._transport = transport
        self._clock = clock
        self._previous: tuple[float, float] | None = None  # (monotonic time, request count)
        self._lock = threading.Lock()

    def _fetch(self) -> str:
        try:
            with httpx.Client(timeout=METRICS_TIMEOUT_S, transport=self._transport, auth=self._auth) as client:
                response = client.get(self.url)
        except httpx.HTTPError as exc:
            raise MetricsUnavailable(f"{self.url} did not answer ({type(exc).__name__}: {redact(str(exc))})") from None
        if response.status_code != 200:
            raise MetricsUnavailable(f"{self.url} answered HTTP {response.status_code}")
        return response.text

    def text(self) -> str:
        """The predictor's /metrics text now (the trends' scrapes); MetricsUnavailable when there is none."""
        if self.protocol == "vertex":
            raise MetricsUnavailable(VERTEX_REASON)
        return self._fetch()

    def read(self) -> dict:
        """{"available", "reason", "url", "p50_s", "p99_s", "observations", "requests_total",
        "request_rate_per_s", "rate_window_s", "scraped_at"}; never raises."""
        report: dict = {"available": False, "reason": None, "url": self.url, "scraped_at": None}
        if self.protocol == "vertex":
            return {**report, "reason": VERTEX_REASON}
        try:
            sample = read_sample(self._fetch())
        except MetricsUnavailable as exc:
            return {**report, "reason": f"the predictor's metrics are unavailable: {exc}"}
        now = self._clock()
        with self._lock:
            previous, self._previous = self._previous, (now, sample.requests)
        return {
            **report, "available": True, "scraped_at": datetime.now(UTC).isoformat(),
            **{key: histogram_quantile(q, sample.buckets) for key, q in QUANTILES.items()},
            "observations": sample.buckets[-1][1], "requests_total": sample.requests,
            "request_rate_per_s": request_rate(previous, now, sample.requests),
            "rate_window_s": None if previous is None else now - previous[0],
        }
