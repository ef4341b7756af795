"""The monitoring dashboard's numbers (feedback/monitoring/dashboard.py, its queries in
feedback/store/dashboard_queries.py, feedback/predictor_client/metrics.py): the Wilson interval,
Prometheus' histogram_quantile, the drift test, the store's aggregates on every database, the
registry summary, and GET /api/dashboard against what the store and registry hold.

Helpers the browser test reuses: ``make_registry(root)`` (three versions: an old one without
evaluation.json, the champion, a challenger that lost), ``FakeLauncher``, ``metrics_text``,
``training_config`` (a local target whose DATA holds a photo per class: ``fill_data``)."""

from __future__ import annotations

import json
import math
import random
import tempfile
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from scipy.stats import ks_2samp
from sqlalchemy import update

from catdog.registry import ModelRegistry
from feedback.monitoring import dashboard
from feedback.predictor_client.metrics import (
    PredictorMetrics,
    histogram_quantile,
    read_sample,
    request_rate,
)
from feedback.retraining.config import parse_training_words
from feedback.retraining.launchers.base import Observation, RunHandle
from feedback.store import dashboard_queries
from feedback.store.tables import Prediction
from tests.feedback_fixtures import (  # noqa: F401
    FakePredictor,
    database_url,
    feedback_settings,
    photo,
    running_app,
    stub_server,
    unused_url,
)

LATENCY_BUCKETS = (0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)  # serving/metrics.py
METRICS = {"accuracy": 0.91, "precision": 0.9, "recall": 0.925, "f1": 0.912, "auc": 0.97}


# -- helpers ---------------------------------------------------------------------------------------
def evaluation(seed: int, n: int = 200, **changes) -> dict:
    rng = random.Random(seed)
    confidences = [round(0.5 + 0.5 * rng.betavariate(5, 1.2), 4) for _ in range(n)]
    return {**METRICS, "n": n, "class_names": ["cat", "dog"], "confusion_matrix": [[92, 8], [10, 90]],
            "test_confidences": confidences, "train_class_counts": {"cat": 480, "dog": 320},
            "feedback_n": 12, "feedback_accuracy": 0.8333, **changes}


def make_registry(root: Path) -> ModelRegistry:
    """v1: an older version (metadata.json only) promoted first; v2: the champion; v3: lost to v2."""
    model = root / "model"
    model.mkdir(parents=True)
    (model / "model.onnx").write_bytes(b"stands in for a model")
    (model / "metadata.json").write_text(json.dumps({"class_names": ["cat", "dog"],
                                                     "split_counts": {"train": 800, "validation": 100, "test": 200}}))
    registry = ModelRegistry(root / "registry")
    first = {k: v - 0.1 for k, v in METRICS.items()}
    registry.register(model)
    registry.set_champion(1)
    registry.record_decision({"promoted": True, "challenger_version": 1, "previous_champion_version": None,
                              "champion_version": 1, "reason": "no champion yet: the challenger becomes the first "
                              "champion", "metric": "accuracy", "margin": 0.0, "challenger": first, "champion": None,
                              "n_test": 150})
    registry.register(model, {"evaluation.json": json.dumps(evaluation(2))})
    registry.set_champion(2, metric="accuracy", score=METRICS["accuracy"], previous_version=1)
    registry.record_decision({"promoted": True, "challenger_version": 2, "previous_champion_version": 1,
                              "champion_version": 2, "reason": "challenger accuracy 0.9100 beats champion 0.8000",
                              "metric": "accuracy", "margin": 0.0, "challenger": METRICS,
                              "champion": {**first, "accuracy": 0.8}, "n_test": 200,
                              "decided_at": "2026-03-01T10:00:00+00:00"})
    lost = evaluation(3, auc=float("nan"), accuracy=0.85)  # a test split of one class: NaN in the JSON
    registry.register(model, {"evaluation.json": json.dumps(lost)})
    registry.record_decision({"promoted": False, "challenger_version": 3, "previous_champion_version": 2,
                              "champion_version": 2, "reason": "challenger accuracy 0.8500 does not beat champion",
                              "metric": "accuracy", "margin": 0.0,
                              "challenger": {**METRICS, "accuracy": 0.85, "auc": float("nan")}, "champion": METRICS,
                              "n_test": 200, "decided_at": "2026-03-05T10:00:00+00:00"})
    return registry


class FakeLauncher:
    """A launcher (feedback/retraining/launchers/base.py's interface) whose runs stay at `observation` until cancelled."""

    def __init__(self, observation: Observation | None = None):
        self.observation = observation or Observation("running", "train", 2)
        self.started: list[tuple[str, str]] = []  # (run id, target)
        self.cancelled: set[str] = set()

    def start(self, run_id, target, config) -> RunHandle:
        self.started.append((run_id, target.name))
        return RunHandle()

    def owns(self, run) -> bool:
        return True

    def observe(self, run) -> Observation:
        return Observation("cancelled", reason="stopped from the dashboard") if run.id in self.cancelled \
            else self.observation

    def cancel(self, run) -> None:
        self.cancelled.add(run.id)


def fill_data(data_dir: Path) -> None:
    """One photo per class: a DATA folder a local run may start on (an empty one is refused up front)."""
    for seed, label in enumerate(("cat", "dog")):
        (data_dir / label).mkdir(parents=True, exist_ok=True)
        (data_dir / label / "a.jpg").write_bytes(photo(seed))


def training_config(tmp_path: Path, registry: ModelRegistry, data: bool = True):
    data_dir = tmp_path / "data"
    if data:
        fill_data(data_dir)
    return parse_training_words([f"DATA={data_dir}", f"REGISTRY={registry.uri}", f"OUTPUT_ROOT={tmp_path / 'out'}"],
                                str(tmp_path / "store"))


def metrics_text(latencies: list[float], requests: int) -> str:
    """A predictor's /metrics (serving/metrics.py's label sets) with these inference latencies and request count."""
    registry = CollectorRegistry()
    names = ["model_name", "model_version", "protocol", "verb"]
    seconds = Histogram("catdog_inference_seconds", "latency", names, buckets=LATENCY_BUCKETS, registry=registry)
    counter = PromCounter("catdog_inference_requests_total", "requests", names, registry=registry)
    for i, latency in enumerate(latencies):
        seconds.labels("catdog", str(1 + i % 2), "v1", "explain" if i % 3 else "predict").observe(latency)
    counter.labels("catdog", "2", "v1", "explain").inc(requests)
    return generate_latest(registry).decode()


def stored_predictions(app) -> list[dict]:
    return app.get("/api/predictions", params={"limit": 500}).json()["predictions"]


# -- pure functions ----------------------------------------------------------------------------------
@pytest.mark.parametrize("successes, n, low, high", [
    (8, 10, 0.4902, 0.9433), (0, 10, 0.0, 0.2775), (50, 100, 0.4038, 0.5962), (10, 10, 0.7225, 1.0),
])
def test_wilson_interval_against_known_values(successes, n, low, high):
    assert dashboard.wilson_interval(successes, n) == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_of_nothing_is_none():
    assert dashboard.wilson_interval(0, 0) is None


def test_histogram_quantile_interpolates_inside_the_bucket():
    buckets = [(0.1, 10), (0.2, 30), (0.5, 40), (math.inf, 40)]
    # rank 20 lies in (0.1, 0.2], 10 of its 20: 0.1 + 0.1 * 10/20; rank 39.6: 0.2 + 0.3 * 9.6/10; rank 4: 0.1 * 4/10
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.488)
    assert histogram_quantile(0.1, buckets) == pytest.approx(0.04)
    assert histogram_quantile(0.5, [(0.1, 1), (math.inf, 10)]) == 0.1  # in +Inf: the largest finite bound
    assert histogram_quantile(0.5, [(0.1, 0), (math.inf, 0)]) is None
    with pytest.raises(ValueError):
        histogram_quantile(0.5, [(0.1, 3)])


def test_read_sample_sums_the_series_of_a_real_metrics_text():
    latencies = [0.003, 0.005, 0.005, 0.009, 0.012, 0.04, 0.3]
    sample = read_sample(metrics_text(latencies, 9))
    assert sample.requests == 9
    assert sample.buckets[-1] == (math.inf, len(latencies))
    assert dict(sample.buckets)[0.006] == 3 and dict(sample.buckets)[0.01] == 4  # both versions' series summed
    # rank 3.5 of 7: the first bucket reaching it is (0.008, 0.01] (3 -> 4): 0.008 + 0.002 * 0.5 / 1
    assert histogram_quantile(0.5, sample.buckets) == pytest.approx(0.009)


def test_request_rate_between_scrapes():
    assert request_rate(None, 10.0, 100) is None
    assert request_rate((10.0, 100), 20.0, 150) == 5.0
    assert request_rate((20.0, 150), 30.0, 20) == 2.0  # the predictor restarted: counted from zero


def test_predictor_metrics_read_and_unavailable():
    texts = iter([metrics_text([0.004, 0.02], 10), metrics_text([0.004, 0.02, 0.02], 40)])
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text=next(texts)))
    clock = iter([100.0, 110.0])
    scraper = PredictorMetrics(feedback_settings(Path("/tmp"), "http://predictor.test"), transport=transport,
                               clock=lambda: next(clock))
    first, second = scraper.read(), scraper.read()
    assert first["available"] and first["request_rate_per_s"] is None and first["requests_total"] == 10
    assert second["request_rate_per_s"] == 3.0 and second["rate_window_s"] == 10.0
    assert second["p50_s"] == pytest.approx(0.015 + 0.005 * 0.5 / 2) and second["observations"] == 3

    def answer(status, text=""):
        return PredictorMetrics(feedback_settings(Path("/tmp"), "http://predictor.test"),
                                transport=httpx.MockTransport(lambda r: httpx.Response(status, text=text))).read()

    assert "HTTP 404" in answer(404)["reason"]
    assert "no catdog_inference_seconds" in answer(200, "# nothing here\n")["reason"]
    assert "cannot be parsed" in answer(200, "catdog_inference_seconds_bucket{le=\"x\"} 1\n")["reason"]
    down = PredictorMetrics(feedback_settings(Path("/tmp"), unused_url())).read()
    assert not down["available"] and "did not answer" in down["reason"]
    vertex = PredictorMetrics(feedback_settings(Path("/tmp"), "https://vertex.test", predictor_protocol="vertex")).read()
    assert not vertex["available"] and "Vertex" in vertex["reason"]


def test_drift_is_flagged_on_different_samples_only():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0.8, 1.0, 200).tolist()
    shifted = rng.uniform(0.5, 0.8, 100).tolist()
    drifted = dashboard.drift_test(shifted, reference)
    assert drifted["status"] == "drift" and drifted["drift"] is True and drifted["p_value"] < 0.01
    assert drifted["statistic"] == pytest.approx(1.0)
    same = dashboard.drift_test(reference, reference)
    assert same["status"] == "no drift" and same["drift"] is False and same["p_value"] == pytest.approx(1.0)
    small = dashboard.drift_test(shifted[:29], reference)
    assert small["status"] == "not enough data" and small["p_value"] is None and small["n_recent"] == 29


def test_histogram_bins_over_one_over_k_to_one():
    edges = dashboard.bin_edges(2)
    assert edges == pytest.approx([0.5 + 0.05 * i for i in range(11)])
    assert dashboard.histogram([0.5, 0.5499, 0.55, 0.97, 1.0], edges) == [2, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert dashboard.bin_edges(4)[0] == 0.25


def test_class_balance_shares():
    balance = dashboard.class_balance(["cat", "cat", "dog", "cat"], {"cat": 30, "dog": 10}, ("cat", "dog"))
    assert balance["predicted_shares"] == {"cat": 0.75, "dog": 0.25}
    assert balance["training_shares"] == {"cat": 0.75, "dog": 0.25} and balance["n"] == 4
    unknown = dashboard.class_balance([], None, ("cat", "dog"))
    assert unknown["predicted_shares"] is None and unknown["training_shares"] is None


def test_registry_summary(tmp_path):
    registry = make_registry(tmp_path)
    summary = dashboard.registry_summary(registry)
    champion = summary["champion"]
    assert champion["version"] == 2 and champion["promoted_at"] == registry.champion()["promoted_at"]
    assert champion["metrics"] == {**METRICS, "n": 200} and champion["confusion_matrix"] == [[92, 8], [10, 90]]
    assert champion["train_class_counts"] == {"cat": 480, "dog": 320}
    v1, v2, v3 = summary["versions"]
    assert [v["version"] for v in (v1, v2, v3)] == [1, 2, 3] and [v["is_champion"] for v in (v1, v2, v3)] == [0, 1, 0]
    assert v1["metrics_source"] == "champion decision" and v1["metrics"]["n"] == 150
    assert v1["metrics"]["accuracy"] == pytest.approx(0.81) and v1["confusion_matrix"] is None
    assert v1["split_counts"] == {"train": 800, "validation": 100, "test": 200} and v1["class_names"] == ["cat", "dog"]
    assert v2["metrics_source"] == "evaluation.json" and v2["feedback_accuracy"] == 0.8333
    assert v3["metrics"]["auc"] is None and v3["decision"]["challenger"]["auc"] is None  # NaN is no JSON
    assert v3["decision"]["promoted"] is False and v3["decision"]["decided_at"] == "2026-03-05T10:00:00+00:00"
    assert v2["decision"]["champion"]["accuracy"] == 0.8 and all(v["registered_at"] for v in (v1, v2, v3))
    assert dashboard.registry_summary(ModelRegistry(tmp_path / "empty")) == {"champion": None, "versions": []}


# -- the store, on every database ------------------------------------------------------------------------
def test_store_aggregates(tmp_path, database_url):  # noqa: F811 (the fixture)
    from tests.feedback_fixtures import started_service

    fake = FakePredictor("1")
    service = started_service(tmp_path, database_url, predictor=fake)
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    # (version, seed, cat probability, verdict, created_at)
    plan = [("1", 1, 0.9, "cat", datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC)),
            ("1", 2, 0.52, "cat", datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC)),
            ("1", 3, 0.7, "cat", datetime(2026, 3, 2, 8, 0, tzinfo=UTC)),
            ("1", 4, 0.2, "cat", datetime(2026, 3, 2, 9, 0, tzinfo=UTC)),  # says dog 0.8: corrected
            ("1", 5, 0.6, None, datetime(2026, 3, 10, 11, 0, tzinfo=UTC)),
            ("2", 6, 0.99, "dog", datetime(2026, 3, 10, 11, 5, tzinfo=UTC)),
            ("2", 7, 1.0, "dog", datetime(2026, 3, 10, 11, 6, tzinfo=UTC)),
            ("2", 1, 0.9, None, datetime(2025, 10, 1, tzinfo=UTC)),  # photo 1 again: shares its verdict (cat)
            ("2", 8, 0.55, None, datetime(2026, 3, 10, 11, 7, tzinfo=UTC))]
    try:
        for version, seed, cat, verdict, created_at in plan:
            fake.version = version
            fake.answer(photo(seed), {"cat": cat, "dog": round(1 - cat, 6)})
            prediction = service.predict(photo(seed))
            if verdict:
                service.validate(prediction.id, verdict)
            with service.db.writing() as session:
                session.execute(update(Prediction).where(Prediction.id == prediction.id).values(created_at=created_at))
        with service.db.read() as session:
            accuracy = dashboard.validated_accuracy(session)
            per_day = dashboard_queries.predictions_per_day(session, dashboard.DAYS, now=now)
            confidences = dashboard.confidence_histogram(session, 2)
            recent = dashboard_queries.recent_predictions(session, "2", limit=3)
    finally:
        service.close()
    v1, v2 = accuracy
    assert (v1["model_version"], v1["n"], v1["confirmed"], v1["corrected"]) == ("1", 4, 3, 1)
    assert v1["accuracy"] == 0.75 and v1["correction_rate"] == 0.25
    assert (v1["ci_low"], v1["ci_high"]) == pytest.approx(dashboard.wilson_interval(3, 4))
    assert (v2["model_version"], v2["n"], v2["confirmed"], v2["corrected"]) == ("2", 3, 1, 2)
    assert per_day == [{"date": "2026-03-01", "count": 1}, {"date": "2026-03-02", "count": 3},
                       {"date": "2026-03-10", "count": 4}]  # the prediction of 2025-10-01 is older than 90 days
    # confirmed: 0.9 (v1), 0.52, 0.7, 0.9 (v2, photo 1); corrected: 0.8 (dog), 0.99, 1.0 (cat, people said dog)
    assert confidences["confirmed"] == [1, 0, 0, 0, 1, 0, 0, 0, 2, 0]
    assert confidences["corrected"] == [0, 0, 0, 0, 0, 0, 1, 0, 0, 2]
    assert [(label, confidence) for label, confidence, _ in recent] == [("cat", 0.55), ("cat", 1.0), ("cat", 0.99)]


def test_neither_shares_per_version_and_accuracy_leaves_neither_out(tmp_path, database_url):  # noqa: F811
    """Issue 18: the share of predictions the model flagged (among those with a score) and the share
    people called neither (among those validated), per model version; a neither verdict is no wrong
    cat/dog prediction, so accuracy and the confidence histogram leave it out."""
    from tests.feedback_fixtures import started_service

    fake = FakePredictor("1")
    service = started_service(tmp_path, database_url, predictor=fake)
    # (version, seed, cat probability, ood score or None (a model without one), verdict)
    plan = [("1", 1, 0.6, None, "cat"), ("1", 2, 0.6, None, "neither"), ("1", 3, 0.6, None, None),
            ("2", 4, 0.6, 9.0, "neither"), ("2", 5, 0.6, 8.0, "dog"), ("2", 6, 0.6, 1.0, "cat"),
            ("2", 7, 0.6, 7.0, None)]
    try:
        for version, seed, cat, score, verdict in plan:
            fake.version, fake.ood = version, None if score is None else {"method": "energy", "threshold": 5.0}
            fake.answer(photo(seed), {"cat": cat, "dog": round(1 - cat, 6)})
            if score is not None:
                fake.flag(photo(seed), score)
            prediction = service.predict(photo(seed))
            if verdict:
                service.validate(prediction.id, verdict)
        with service.db.read() as session:
            shares = dashboard.neither_shares(session)
            accuracy = dashboard.validated_accuracy(session)
            confidences = dashboard.confidence_histogram(session, 2)
    finally:
        service.close()
    assert shares == [
        {"model_version": "1", "predictions": 3, "scored": 0, "flagged": 0, "flagged_share": None, "validated": 2,
         "neither": 1, "neither_share": 0.5, "flagged_neither": 0},
        {"model_version": "2", "predictions": 4, "scored": 4, "flagged": 3, "flagged_share": 0.75, "validated": 3,
         "neither": 1, "neither_share": pytest.approx(1 / 3), "flagged_neither": 1},
    ]
    assert [(a["model_version"], a["n"], a["confirmed"], a["corrected"]) for a in accuracy] == [("1", 1, 1, 0),
                                                                                                 ("2", 2, 1, 1)]
    assert sum(confidences["confirmed"]) == 2 and sum(confidences["corrected"]) == 1


# -- GET /api/dashboard -------------------------------------------------------------------------------------
@pytest.fixture
def metrics_server():
    state = {"latencies": [0.003, 0.005, 0.012, 0.02, 0.02, 0.3], "requests": 6}
    with stub_server(lambda *_: (200, {"content-type": "text/plain; version=0.0.4"},
                                 metrics_text(state["latencies"], state["requests"]).encode())) as url:
        yield url, state


def test_the_dashboard_api_holds_what_the_store_and_the_registry_hold(tmp_path, metrics_server):
    metrics_url, metrics_state = metrics_server
    registry = make_registry(tmp_path)
    fake = FakePredictor("2")
    rng = random.Random(7)
    settings = feedback_settings(tmp_path, metrics_url)
    with running_app(settings, predictor=fake, training=training_config(tmp_path, registry),
                     launchers={"local": FakeLauncher()}) as app:
        for seed in range(60):
            fake.version = "1" if seed < 15 else "2"
            cat = round(rng.uniform(0.02, 0.98), 4)
            fake.answer(photo(seed), {"cat": cat, "dog": round(1 - cat, 4)})
            body = app.predict(photo(seed)).json()
            if seed % 3 == 0:
                app.validate(body["id"], body["predicted_class"])
            elif seed % 5 == 0:
                app.validate(body["id"], "dog" if body["predicted_class"] == "cat" else "cat")
        response = app.get("/api/dashboard")
        assert response.status_code == 200, response.text
        data = response.json()
        predictions = stored_predictions(app)
        metrics_state.update(requests=18)
        later = app.get("/api/dashboard").json()["predictor"]

    # the registry
    # shown without the server's absolute folders (the registry lives in the test's temporary folder)
    assert data["registry"] == {"uri": registry.uri.replace(tempfile.gettempdir(), "$TMPDIR", 1), "error": None}
    assert not data["registry"]["uri"].startswith("/")
    evaluation_v2 = registry.read_json(2, "evaluation.json")
    assert data["champion"]["version"] == 2 and data["champion"]["promoted_at"] == registry.champion()["promoted_at"]
    assert data["champion"]["metrics"] == {k: evaluation_v2[k] for k in ("accuracy", "precision", "recall", "f1", "auc", "n")}
    assert [v["version"] for v in data["versions"]] == registry.versions()
    history = {r["challenger_version"]: r for r in registry.history()}
    for version in data["versions"]:
        assert version["decision"]["promoted"] == history[version["version"]]["promoted"]
        assert version["decision"]["reason"] == history[version["version"]]["reason"]
        stored = registry.read_json(version["version"], "evaluation.json")
        assert version["confusion_matrix"] == (stored and stored["confusion_matrix"])

    # the store
    days = Counter(p["timestamp"][:10] for p in predictions)
    assert {d["date"]: d["count"] for d in data["predictions_per_day"]} == dict(days)
    validated = [p for p in predictions if p["status"] != "unvalidated"]
    for row in data["validated_accuracy"]:
        mine = [p for p in validated if p["model_version"] == row["model_version"]]
        confirmed = sum(p["status"] == "confirmed" for p in mine)
        assert (row["n"], row["confirmed"], row["corrected"]) == (len(mine), confirmed, len(mine) - confirmed)
        assert row["accuracy"] == pytest.approx(confirmed / len(mine))
    assert {r["model_version"] for r in data["validated_accuracy"]} == {"1", "2"}
    assert [(r["model_version"], r["predictions"], r["validated"], r["scored"]) for r in data["neither"]] == [
        (version, sum(p["model_version"] == version for p in predictions),
         sum(p["model_version"] == version for p in validated), 0) for version in ("1", "2")]
    hist = data["confidence_histogram"]
    assert hist["edges"] == pytest.approx([0.5 + 0.05 * i for i in range(11)])
    for status in ("confirmed", "corrected"):
        bins = Counter(min(9, int((Decimal(str(p["confidence"])) - Decimal("0.5")) / Decimal("0.05")))
                       for p in validated if p["status"] == status)  # exact: a confidence on an edge opens its bin
        assert hist[status] == [bins[i] for i in range(10)]

    # the champion's recent predictions: class balance and drift against its test confidences
    recent = [p for p in predictions if p["model_version"] == "2"]
    assert data["recent"]["n"] == len(recent) == 45
    labels = Counter(p["predicted_class"] for p in recent)
    assert data["class_balance"]["predicted_counts"] == {"cat": labels["cat"], "dog": labels["dog"]}
    assert data["class_balance"]["training_shares"] == {"cat": 0.6, "dog": 0.4}
    test = ks_2samp([p["confidence"] for p in recent], evaluation_v2["test_confidences"])
    drift = data["drift"]
    assert drift["statistic"] == pytest.approx(test.statistic) and drift["p_value"] == pytest.approx(test.pvalue)
    assert drift["status"] == ("drift" if test.pvalue < 0.01 else "no drift")
    assert (drift["n_recent"], drift["n_reference"], drift["p_threshold"], drift["min_n"]) == (45, 200, 0.01, 30)

    # the predictor's /metrics
    predictor = data["predictor"]
    buckets = read_sample(metrics_text([0.003, 0.005, 0.012, 0.02, 0.02, 0.3], 6)).buckets
    assert predictor["available"] and predictor["p50_s"] == pytest.approx(histogram_quantile(0.5, buckets))
    assert predictor["p99_s"] == pytest.approx(histogram_quantile(0.99, buckets))
    assert predictor["request_rate_per_s"] is None and predictor["requests_total"] == 6
    assert later["request_rate_per_s"] == pytest.approx(12 / later["rate_window_s"])


def test_explain_requests_alone_give_the_predictor_panel_its_latency(tmp_path):
    """The page asks the predictor for :explain only (a heat map with every upload): those requests
    are what the panel's latency and request count are read from. A model name of its own: the
    tests' predictors share one process's metrics, and this test must see only its own requests."""
    from tests.serving_fixtures import make_model, metric_value, run_server, tiny_model_dir

    name = "catdog-explained"
    with run_server(make_model(tiny_model_dir(), name=name)) as predictor:
        settings = feedback_settings(tmp_path, predictor.url, predictor_model=name)
        with running_app(settings, training=training_config(tmp_path, ModelRegistry(tmp_path / "registry")),
                         launchers={"local": FakeLauncher()}) as app:
            for seed in range(3):
                answer = app.predict(photo(seed), params={"explain": "true"})
                assert answer.status_code == 200 and answer.json()["explanation"]["method"] == "grad-cam", answer.text
            panel = app.get("/api/dashboard").json()["predictor"]
        text = predictor.get("/metrics").text
    assert metric_value(text, "catdog_inference_requests_total", model_name=name, verb="explain") == 3
    assert metric_value(text, "catdog_inference_requests_total", model_name=name, verb="predict") == 0
    assert metric_value(text, "catdog_inference_seconds_count", model_name=name, verb="explain") == 3
    assert panel["available"], panel["reason"]
    assert panel["requests_total"] >= 3 and panel["p50_s"] > 0 and panel["p99_s"] >= panel["p50_s"]


def test_the_dashboard_with_nothing_yet_and_a_predictor_that_is_down(tmp_path):
    empty = ModelRegistry(tmp_path / "registry")
    with running_app(feedback_settings(tmp_path, unused_url()), predictor=FakePredictor(),
                     training=training_config(tmp_path, empty), launchers={"local": FakeLauncher()}) as app:
        response = app.get("/api/dashboard")
        page = app.get("/dashboard")
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["champion"] is None and data["versions"] == [] and data["predictions_per_day"] == []
    assert data["drift"]["status"] == "not enough data" and data["drift"]["histogram"]["recent"] is None
    assert not data["predictor"]["available"] and "did not answer" in data["predictor"]["reason"]
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assert 'id="plotly.js-style-global"' in page.text and "<select" not in page.text  # one target: no choice


def test_an_unreadable_registry_is_reported_not_a_500(tmp_path):
    registry = make_registry(tmp_path)
    Path(registry.alias_uri).write_text("{not json")
    with running_app(feedback_settings(tmp_path, unused_url(), predictor_protocol="vertex"), predictor=FakePredictor(),
                     training=training_config(tmp_path, registry), launchers={"local": FakeLauncher()}) as app:
        data = app.get("/api/dashboard").json()
    assert "JSONDecodeError" in data["registry"]["error"] and data["champion"] is None
    assert "Vertex" in data["predictor"]["reason"]


def test_plotly_js_is_served_by_the_app(tmp_path):
    import plotly

    from feedback.web.routers.dashboard import PLOTLY_JS, PLOTLY_URL

    with running_app(feedback_settings(tmp_path, unused_url()), predictor=FakePredictor()) as app:
        served = app.get(PLOTLY_URL)
        other = app.get("/static-vendor/plotly-0.0.0.min.js")
        page = app.get("/dashboard").text
    assert served.status_code == 200 and served.content == PLOTLY_JS.read_bytes()
    assert served.headers["content-type"].startswith("text/javascript")
    assert "immutable" in served.headers["cache-control"] and plotly.__version__ in PLOTLY_URL
    assert other.status_code == 404 and f'src="{PLOTLY_URL}"' in page
