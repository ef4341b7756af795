"""The feedback app's /metrics (feedback/monitoring/metrics.py): counters, the request histogram by route
template, the state gauges read from the database and registry, and what /metrics does not need or show."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from feedback.monitoring import metrics as app_metrics
from feedback.retraining.config import parse_training_words
from tests.feedback_fixtures import FakePredictor, app, feedback_settings, photo, predictor, running_app, started_service  # noqa: F401


def samples(text: str) -> dict[tuple, float]:
    """(sample name, sorted label items) -> value, parsed by prometheus_client's own parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scrape: dict, name: str, **labels) -> float:
    return scrape.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))), 0.0)


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    monkeypatch.setattr(app_metrics, "STATE_TTL_S", 0.0)  # every scrape reads the database again


def scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def test_uploads_verdicts_queue_and_requests_by_route_template(app):
    before = scrape(app)
    ids = [app.predict(photo(seed)).json()["id"] for seed in (1, 2, 3)]
    first = app.get(f"/api/predictions/{ids[0]}").json()
    other = next(label for label in ("cat", "dog") if label != first["predicted_class"])
    assert app.validate(ids[0], first["predicted_class"]).status_code == 201
    assert app.validate(ids[1], "neither").status_code == 201
    assert app.get("/no/such/page").status_code == 404
    upload = app.post("/api/upload-data", files={"files[]": ("a.jpg", photo(4))}, data={"labels[]": other})
    assert upload.status_code == 200, upload.text
    after = scrape(app)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("catdog_app_uploads_total", source="api") == 3
    assert delta("catdog_app_uploads_total", source="upload-data") == 1
    assert delta("catdog_app_verdicts_total", verdict=first["predicted_class"], outcome="confirmed") == 1
    assert delta("catdog_app_verdicts_total", verdict="neither", outcome="neither") == 1
    assert value(after, "catdog_app_review_queue_size") == 1  # the third prediction
    template = "/api/predictions/{prediction_id}"
    assert delta("catdog_app_request_seconds_count", method="GET", route=template, status_class="2xx") == 1
    assert delta("catdog_app_request_seconds_count", method="POST", route="/api/predict", status_class="2xx") == 3
    assert delta("catdog_app_request_seconds_count", method="GET", route="unmatched", status_class="4xx") == 1
    assert not [key for key in after if key[0] == "catdog_app_request_seconds_count"
                and any(ids[0] in v or "/no/such" in v for _, v in key[1])]  # raw paths never become labels
    assert value(after, "catdog_app_state_up", part="database") == value(after, "catdog_app_state_up", part="registry") == 1
    assert {state: value(after, "catdog_app_training_runs", state=state)
            for state in ("queued", "running", "succeeded", "failed", "cancelled")} == dict.fromkeys(
        ("queued", "running", "succeeded", "failed", "cancelled"), 0)
    assert value(after, "catdog_app_logger_events_total", outcome="stored") >= 0
    assert ("catdog_app_logger_events_total", (("outcome", "rejected"),)) in after  # defined before any event


def test_metrics_needs_no_token_and_shows_no_secret(tmp_path, predictor):
    settings = feedback_settings(tmp_path, predictor.url, app_token="s3cret-token")
    with running_app(settings) as guarded:
        assert guarded.validate("x", "cat").status_code == 401  # writes still need the token
        response = guarded.get("/metrics")
        assert response.status_code == 200
        assert "s3cret" not in response.text and str(tmp_path) not in response.text
        assert '"401"' not in response.text and 'status_class="4xx"' in response.text  # classes, not codes, as labels
        assert "catdog_inference_" not in response.text  # the predictor's metrics stay the predictor's


def fake_model(tmp_path):
    folder = tmp_path / "fake-model"
    folder.mkdir()
    (folder / "metadata.json").write_text(json.dumps({"class_names": ["cat", "dog"]}))
    return folder


def test_state_gauges_drift_accuracy_and_runs(tmp_path):
    from catdog.registry import ModelRegistry
    from feedback.store.tables import TrainingRun

    registry = ModelRegistry(str(tmp_path / "registry"))
    reference = [0.97 + 0.0005 * i for i in range(40)]  # the champion's confident test split
    registry.set_champion(registry.register(fake_model(tmp_path), {"evaluation.json": json.dumps(
        {"test_confidences": reference})}))
    fake = FakePredictor(version="1")
    training = parse_training_words([f"REGISTRY={registry.uri}"], str(tmp_path / "store"))
    service = started_service(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", predictor=fake, training=training)
    try:
        collector = app_metrics.StateCollector(service)
        quiet = samples_of(collector)
        assert quiet["catdog_app_drift_flagged"] == 0 and "catdog_app_drift_p_value" not in quiet  # not enough data
        assert "catdog_app_verdict_accuracy" not in quiet
        predictions = [service.predict(photo(seed)) for seed in range(40)]  # all cat at 0.6: far less sure
        for prediction in predictions[:3]:
            service.validate(prediction.id, "cat")
        service.validate(predictions[3].id, "dog")
        with service.db.writing() as session:
            session.add(TrainingRun(id="f" * 32, target="local", trigger="manual", state="failed", parameters={},
                                    validation_cutoff_id=0, validated_photos=0, new_validated_photos=0))
        state = samples_of(collector)
    finally:
        service.close()
    assert state["catdog_app_drift_flagged"] == 1 and state["catdog_app_drift_p_value"] < 0.01
    assert state["catdog_app_drift_recent_predictions"] == 40
    assert state[("catdog_app_verdict_accuracy", "1")] == 0.75
    assert state[("catdog_app_verdict_predictions", "1")] == 4
    assert state[("catdog_app_training_runs", "failed")] == 1 and state[("catdog_app_training_runs", "running")] == 0
    assert state["catdog_app_review_queue_size"] == 36
    assert state[("catdog_app_state_up", "database")] == state[("catdog_app_state_up", "registry")] == 1


def test_reviewer_gauges_contested_unresolved_and_alpha(tmp_path):
    """Two reviewers: agreeing on 5 photos, split on the sixth (a tie: unresolved); alpha appears
    once 5 photos are shared and there is disagreement to measure."""
    service = started_service(tmp_path, f"sqlite:///{tmp_path}/db.sqlite")
    try:
        collector = app_metrics.StateCollector(service)
        quiet = samples_of(collector)
        assert (quiet["catdog_app_contested_photos"], quiet["catdog_app_unresolved_photos"]) == (0, 0)
        assert "catdog_app_reviewer_alpha" not in quiet  # undefined: nobody judged anything
        predictions = [service.predict(photo(seed)) for seed in range(6)]
        for i, prediction in enumerate(predictions):
            service.validate(prediction.id, "cat" if i % 2 else "dog", by="ana")
            service.validate(prediction.id, ("dog" if i % 2 else "cat") if i == 5 else ("cat" if i % 2 else "dog"),
                             by="ben")
        state = samples_of(collector)
    finally:
        service.close()
    assert (state["catdog_app_contested_photos"], state["catdog_app_unresolved_photos"]) == (1, 1)
    assert 0 < state["catdog_app_reviewer_alpha"] < 1


def test_an_unreadable_registry_is_state_up_0_not_a_broken_scrape_and_the_database_part_stays(tmp_path):
    training = parse_training_words([f"REGISTRY={tmp_path}/registry"], str(tmp_path / "store"))
    service = started_service(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", training=training)
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "champion.json").write_text("{not json")
    try:
        state = samples_of(app_metrics.StateCollector(service))
    finally:
        service.close()
    assert state[("catdog_app_state_up", "registry")] == 0 and state[("catdog_app_state_up", "database")] == 1
    assert state["catdog_app_review_queue_size"] == 0 and "catdog_app_drift_flagged" not in state


def samples_of(collector) -> dict:
    """name (or (name, the one label's value)) -> value."""
    result = {}
    for family in collector.collect():
        for sample in family.samples:
            key = (sample.name, *sample.labels.values()) if sample.labels else sample.name
            result[key] = sample.value
    return result
