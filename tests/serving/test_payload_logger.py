"""The predictor's own payload logger (serving/payload_logger.py): the CloudEvents KServe's agent
sends, end to end into the feedback app (V1 and V2 batches appear in history and the review queue
as source endpoint; the app's own uploads are not stored twice), and a dead or stuck sink never
fails or holds a prediction (dropped and failed events are counted)."""

from __future__ import annotations

import hashlib
import json
import threading
import time

import pytest

from serving.payload_logger import REQUEST_TYPE, RESPONSE_TYPE, PayloadLogger, redact_url
from tests.feedback_fixtures import feedback_settings, predictor, running_app, stub_server, unused_url  # noqa: F401
from tests.serving_fixtures import make_model, photo, run_server, tiny_model_dir, v1_json, v2_json

pytestmark = pytest.mark.filterwarnings("ignore::fastapi.exceptions.FastAPIDeprecationWarning")
ROUTE = "/api/events/inference"
PHOTOS = [photo(30), photo(31), photo(32), photo(33)]


def wait_for(condition, what: str, timeout: float = 30.0):
    """Poll `condition()` until it is truthy (the events travel on another thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


@pytest.fixture(scope="module")
def module_predictor():
    logger = PayloadLogger("http://127.0.0.1:9/unset", token="s3cret", inference_service="catdog-local")
    logger.start()
    try:
        with run_server(make_model(tiny_model_dir()), payload_logger=logger) as server:
            yield server, logger
    finally:
        logger.stop()


@pytest.fixture
def logging_predictor(module_predictor):
    """A predictor whose logger sends to a URL the test sets (logger.url); its counts start at 0."""
    server, logger = module_predictor
    logger.counts = dict.fromkeys(logger.counts, 0)
    return server, logger


def test_v1_and_v2_batches_at_the_predictor_reach_the_apps_history_and_queue(tmp_path, logging_predictor):
    server, logger = logging_predictor
    with running_app(feedback_settings(tmp_path, server.url, app_token="s3cret")) as app:
        logger.url = app.url + ROUTE
        assert server.post("/v1/models/catdog:predict", json=v1_json(*PHOTOS[:2])).status_code == 200
        assert server.post("/v2/models/catdog/infer", json=v2_json(*PHOTOS[2:])).status_code == 200
        upload = app.predict(photo(40), headers={"Authorization": "Bearer s3cret"})  # the app's own call
        assert upload.status_code == 200, upload.text

        def endpoint_predictions():
            listed = app.get("/api/predictions", params={"limit": 100}).json()["predictions"]
            found = [p for p in listed if p["source"] == "endpoint"]
            return found if len(found) == 4 and app.get(ROUTE).json()["counts"].get("own") else None

        found = wait_for(endpoint_predictions, "4 endpoint predictions in history")
        assert {p["inference_service"] for p in found} == {"catdog-local"}
        assert {p["model_version"] for p in found} == {server.model.current.version}
        assert sorted(p["photo"]["sha256"] for p in found) == sorted(
            hashlib.sha256(p).hexdigest() for p in PHOTOS)
        queue = {p["id"] for p in app.get("/api/review-queue", params={"limit": 100}).json()["predictions"]}
        assert {p["id"] for p in found} <= queue
        listed = app.get("/api/predictions", params={"limit": 100}).json()["predictions"]
        assert len(listed) == 5  # the upload once (source api), not again as an endpoint prediction
        counts = app.get(ROUTE).json()["counts"]
        assert counts["stored"] == 2 and counts["predictions"] == 4 and counts["own"] == 2
        assert logger.counts["failed"] == 0 and logger.counts["dropped"] == 0


def test_the_events_are_kserves(logging_predictor):
    server, logger = logging_predictor
    received = []

    def sink(method, path, headers, body):
        received.append(({k.lower(): v for k, v in headers.items()}, body))
        return 202, {}, {"result": "pending"}

    with stub_server(sink) as url:
        logger.url = url + ROUTE
        body = v1_json(PHOTOS[0])
        answer = server.post("/v1/models/catdog:predict", json=body, headers={"Ce-Id": "my-request-1"})
        assert answer.status_code == 200
        refused = server.post("/v1/models/catdog:predict", json={"instances": []})
        assert refused.status_code == 400
        assert server.get("/v2/models/catdog").status_code == 200  # not an inference: not logged
        wait_for(lambda: len(received) >= 3, "3 events")
    request, response, failed = received[:3]
    for headers, _ in (request, response):
        assert headers["ce-specversion"] == "1.0" and headers["ce-id"] == "my-request-1"
        assert headers["ce-inferenceservicename"] == "catdog-local" and headers["ce-component"] == "predictor"
        assert headers["ce-endpoint"] == "default" and "ce-namespace" in headers and headers["ce-metadata"] == "{}"
        assert headers["ce-source"].startswith("http://") and headers["ce-time"]
        assert headers["content-type"] == "application/json"  # the request's, in both (as KServe's agent)
        assert headers["authorization"] == "Bearer s3cret"
    assert (request[0]["ce-type"], response[0]["ce-type"]) == (REQUEST_TYPE, RESPONSE_TYPE)
    assert json.loads(request[1]) == body
    assert response[1] == answer.content and response[0]["ce-modelversion"] == server.model.current.version
    assert failed[0]["ce-type"] == REQUEST_TYPE and len(received) == 3  # a 400 has no response event


def test_a_dead_sink_fails_no_prediction(logging_predictor):
    server, logger = logging_predictor
    logger.url = unused_url() + ROUTE
    for i in range(3):
        answer = server.predict(PHOTOS[i])
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == 1
    wait_for(lambda: logger.counts["failed"] >= 6, "6 failed events")
    assert logger.counts["sent"] == 0


def test_a_stuck_sink_fills_the_queue_and_events_are_dropped_not_waited_for():
    release = threading.Event()

    def stuck(method, path, headers, body):
        release.wait(30)
        return 202, {}, {}

    with stub_server(stuck) as url:
        logger = PayloadLogger(url + ROUTE, queue_size=2)
        logger.start()
        try:
            with run_server(make_model(tiny_model_dir()), payload_logger=logger) as server:
                for i in range(4):  # the first pair blocks the sender; the queue holds 2 events
                    assert server.predict(PHOTOS[i]).status_code == 200
                assert logger.counts["dropped"] >= 4
        finally:
            release.set()
            logger.stop()


def test_the_logger_url_is_shown_without_its_password():
    assert redact_url("http://logger:tok@app:8000/api/events/inference") == "http://app:8000/api/events/inference"
    with pytest.raises(ValueError):
        PayloadLogger("ftp://x")
