"""The payload logger's sink (feedback/labelling/endpoint_events.py, /api/events/inference): KServe's
CloudEvents (built here with the cloudevents SDK, as KServe's agent sends them) paired by ce-id in
either order, V1 and V2 (JSON and binary) batches stored as source "endpoint" predictions that
history and the review queue show; duplicates stored once; malformed, unauthenticated, oversized,
unpaired and unreadable events counted and refused with a 4xx, nothing half-stored; the 0004
migration on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import base64
import json
import socket
import uuid
from collections import Counter
from urllib.parse import urlsplit

import pytest
import requests
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from sqlalchemy import func, inspect, select, text

from feedback.labelling.endpoint_events import REQUEST_TYPE, RESPONSE_TYPE, EndpointEvents, PendingEvents, parse_event
from feedback.store.tables import Photo, Prediction
from tests.feedback_fixtures import (  # noqa: F401 (fixtures)
    FakePredictor,
    database_url,
    feedback_settings,
    photo,
    predictor,
    running_app,
    started_service,
)
from tests.serving_fixtures import v1_json, v2_json

ROUTE = "/api/events/inference"
PHOTOS = [photo(20), photo(21)]


def event(kind: str, event_id: str, body: bytes | dict, content_type: str = "application/json", **extensions):
    """(headers, body) of one logger CloudEvent in binary mode, as KServe's agent sends it."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    attributes = {"specversion": "1.0", "id": event_id, "source": "http://localhost:9081",
                  "type": REQUEST_TYPE if kind == "request" else RESPONSE_TYPE, "datacontenttype": content_type,
                  "inferenceservicename": "catdog", "namespace": "catdog", "component": "predictor",
                  "endpoint": "default", "metadata": "{}", **extensions}
    return to_binary(CloudEvent(attributes, data), data_marshaller=lambda d: d)


def v1_answer(*labels: str) -> dict:
    return {"predictions": [{"label": label, "probabilities": {"cat": 0.7 if label == "cat" else 0.3,
                                                               "dog": 0.3 if label == "cat" else 0.7}}
                            for label in labels]}


def post(app, kind, event_id, body, token=None, **extensions) -> requests.Response:
    headers, data = event(kind, event_id, body, **extensions)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return app.post(ROUTE, headers=headers, data=data)


def endpoint_rows(service) -> list[Prediction]:
    with service.db.read() as session:
        return list(session.scalars(select(Prediction).where(Prediction.source == "endpoint")
                                    .order_by(Prediction.event_index)))


@pytest.fixture
def sink(tmp_path, predictor):  # noqa: F811
    with running_app(feedback_settings(tmp_path, predictor.url)) as client:
        yield client


def test_a_v1_batch_pair_becomes_two_endpoint_predictions_in_history_and_the_queue(sink):
    event_id = str(uuid.uuid4())
    first = post(sink, "request", event_id, v1_json(*PHOTOS))
    assert (first.status_code, first.json()["result"]) == (202, "pending")
    second = post(sink, "response", event_id, v1_answer("cat", "dog"), modelversion="7")
    assert second.status_code == 201 and second.json()["result"] == "stored"
    ids = second.json()["predictions"]
    assert len(ids) == 2
    history = sink.get("/api/predictions").json()["predictions"]
    listed = {p["id"]: p for p in history}
    assert set(ids) <= set(listed)
    assert [listed[i]["predicted_class"] for i in ids] == ["cat", "dog"]
    assert {(listed[i]["source"], listed[i]["inference_service"], listed[i]["model_version"]) for i in ids} == {
        ("endpoint", "catdog", "7")}
    queue = sink.get("/api/review-queue").json()
    assert set(ids) <= {p["id"] for p in queue["predictions"]}
    assert sink.get(f"/api/predictions/{ids[1]}/photo").content == PHOTOS[1]  # the photo itself is stored
    rows = endpoint_rows(sink.service)
    assert [(r.event_id, r.event_index) for r in rows] == [(event_id, 0), (event_id, 1)]
    counts = sink.get(ROUTE).json()["counts"]
    assert counts["stored"] == 1 and counts["predictions"] == 2 and counts["received"] == 2


def test_the_response_may_come_first_and_v1_takes_the_version_the_predictor_serves(sink, predictor):  # noqa: F811
    event_id = str(uuid.uuid4())
    assert post(sink, "response", event_id, v1_answer("dog")).status_code == 202
    stored = post(sink, "request", event_id, v1_json(PHOTOS[0]))
    assert stored.status_code == 201, stored.text
    (row,) = endpoint_rows(sink.service)
    assert row.model_version == predictor.model.current.version  # KServe's V1 answer does not name it
    assert row.label == "dog" and row.source == "endpoint"


def test_v2_json_and_v2_binary_requests_with_binary_outputs(sink, predictor):  # noqa: F811
    import numpy as np
    import tritonclient.http as triton

    event_id = str(uuid.uuid4())
    answer = predictor.post("/v2/models/catdog/infer", json=v2_json(*PHOTOS))
    assert answer.status_code == 200
    assert post(sink, "request", event_id, v2_json(*PHOTOS)).status_code == 202
    assert post(sink, "response", event_id, answer.json()).status_code == 201
    # the binary tensor extension: raw photos in, binary outputs back; the event has no header length
    tensor = triton.InferInput("image_bytes", [2], "BYTES")
    tensor.set_data_from_numpy(np.array(PHOTOS[::-1], dtype=np.object_), binary_data=True)
    outputs = [triton.InferRequestedOutput(n, binary_data=True) for n in ("label", "probabilities")]
    body, json_size = triton.InferenceServerClient.generate_request_body([tensor], outputs=outputs)
    binary = predictor.post("/v2/models/catdog/infer", data=body, headers={
        "Inference-Header-Content-Length": str(json_size), "Content-Type": "application/octet-stream"})
    assert binary.status_code == 200 and binary.headers.get("inference-header-content-length")
    binary_id = str(uuid.uuid4())
    for kind, data in (("request", body), ("response", binary.content)):
        # KServe's agent gives both events the REQUEST's content type
        response = post(sink, kind, binary_id, data, content_type="application/octet-stream")
        assert response.status_code in (201, 202), response.text
    rows = endpoint_rows(sink.service)
    by_event = Counter(r.event_id for r in rows)
    assert by_event == {event_id: 2, binary_id: 2}
    first = [r for r in rows if r.event_id == event_id]
    second = [r for r in rows if r.event_id == binary_id]
    assert [r.photo_sha256 for r in first] == [r.photo_sha256 for r in second][::-1]  # the batch's order kept
    assert [r.label for r in first] == [r.label for r in second][::-1]
    assert all(r.model_version == predictor.model.current.version for r in rows)


def test_a_pair_sent_twice_is_stored_once_even_by_a_new_process(sink, tmp_path):
    event_id = str(uuid.uuid4())
    pair = [("request", v1_json(*PHOTOS)), ("response", v1_answer("cat", "cat"))]
    assert [post(sink, k, event_id, b).status_code for k, b in pair] == [202, 201]
    again = [post(sink, k, event_id, b) for k, b in pair]
    assert [(r.status_code, r.json()["result"]) for r in again] == [(200, "duplicate")] * 2
    # a restarted app (or another replica) knows nothing in memory: the database refuses the copy
    fresh = EndpointEvents(sink.service)
    outcomes = [fresh.receive(*event(k, event_id, b)) for k, b in pair]
    assert [(o.status, o.result) for o in outcomes] == [(202, "pending"), (200, "duplicate")]
    assert len(endpoint_rows(sink.service)) == 2


def test_malformed_events_are_4xx_and_counted(sink):
    assert sink.post(ROUTE, data=b"{}", headers={"Content-Type": "application/json"}).status_code == 400
    headers, data = event("request", "x1", v1_json(PHOTOS[0]))
    headers["ce-type"] = "org.example.other"
    assert sink.post(ROUTE, headers=headers, data=data).status_code == 400
    for kind, body in (("request", {"instances": [{"image_bytes": {"b64": "not base64!"}}]}),
                       ("response", v1_answer("cat"))):
        last = post(sink, kind, "bad-b64", body)
    assert last.status_code == 422 and "base64" in last.json()["detail"]
    for kind, body in (("request", v1_json(*PHOTOS)), ("response", v1_answer("cat"))):
        last = post(sink, kind, "count-mismatch", body)
    assert last.status_code == 422 and "2 photo(s)" in last.json()["detail"]
    for kind, body in (("request", v1_json(PHOTOS[0])), ("response", {"predictions": [{"label": "cow",
                                                                        "probabilities": {"cow": 1.0}}]})):
        last = post(sink, kind, "unknown-label", body)
    assert last.status_code == 422 and "cow" in last.json()["detail"]
    for kind, body in (("request", {"instances": [{"image_bytes": {"b64": base64.b64encode(b"no image").decode()}}]}),
                       ("response", v1_answer("cat"))):
        last = post(sink, kind, "not-a-photo", body)
    assert last.status_code == 422 and last.json()["result"] == "photo_rejected"
    # KServe also forwards metadata calls: an empty request body is no inference, and no error
    for kind, body in (("request", b""), ("response", {"name": "catdog", "ready": True})):
        last = post(sink, kind, "metadata-call", body)
    assert (last.status_code, last.json()["result"]) == (200, "ignored")
    counts = sink.get(ROUTE).json()["counts"]
    assert counts["malformed"] == 2 and counts["unreadable"] == 3 and counts["photo_rejected"] == 1
    assert counts["ignored"] == 1 and "stored" not in counts
    assert endpoint_rows(sink.service) == []
    with sink.service.db.read() as session:
        assert session.scalar(select(func.count()).select_from(Photo)) == 0


def test_the_apps_own_calls_to_the_predictor_are_ignored(sink):
    own = f"catdog-feedback-{uuid.uuid4().hex}"  # feedback.predictor sends this Ce-Id; loggers keep it
    answers = [post(sink, k, own, b) for k, b in (("request", v1_json(PHOTOS[0])), ("response", v1_answer("cat")))]
    assert [(a.status_code, a.json()["result"]) for a in answers] == [(200, "ignored")] * 2
    assert endpoint_rows(sink.service) == [] and sink.get(ROUTE).json()["pending"] == 0


def _raw_headers_only(url: str, headers: dict) -> bytes:
    """Send only a request's headers (a Content-Length of 10 MB and no body) and read the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
        lines = [f"POST {ROUTE} HTTP/1.1", f"Host: {parts.netloc}", "Content-Length: 10000000",
                 *[f"{k}: {v}" for k, v in headers.items()], "", ""]
        connection.sendall("\r\n".join(lines).encode())
        return connection.recv(4096)


def test_the_token_is_checked_before_the_body_is_read(tmp_path, predictor):  # noqa: F811
    settings = feedback_settings(tmp_path, predictor.url, app_token="app-secret", logger_token="logger-secret")
    with running_app(settings) as app:
        headers, data = event("request", "t1", v1_json(PHOTOS[0]))
        assert app.post(ROUTE, headers=headers, data=data).status_code == 401
        wrong = {**headers, "Authorization": "Bearer app-secret"}  # LOGGER_TOKEN set: only it opens the sink
        assert app.post(ROUTE, headers=wrong, data=data).status_code == 401
        basic = base64.b64encode(b"logger:logger-secret").decode()  # a logger URL's user:token@ (KServe's agent)
        assert app.post(ROUTE, headers={**headers, "Authorization": f"Basic {basic}"}, data=data).status_code == 202
        assert post(app, "response", "t1", v1_answer("cat"), token="logger-secret").status_code == 201
        answer = _raw_headers_only(app.url, {**headers, "Authorization": "Bearer nope"})
        assert answer.startswith(b"HTTP/1.1 401")  # answered without waiting for the 10 MB
        cross = {**headers, "Authorization": "Bearer logger-secret", "Origin": "http://evil.example"}
        assert app.post(ROUTE, headers=cross, data=data).status_code == 403
        assert app.get(ROUTE).json()["counts"]["unauthorized"] == 4
    settings = feedback_settings(tmp_path / "b", predictor.url, app_token="app-secret")
    with running_app(settings) as app:  # no LOGGER_TOKEN: APP_TOKEN, as for the other writes
        assert post(app, "request", "t2", v1_json(PHOTOS[0])).status_code == 401
        assert post(app, "request", "t2", v1_json(PHOTOS[0]), token="app-secret").status_code == 202


def test_bodies_over_the_sinks_cap_are_413(tmp_path, predictor):  # noqa: F811
    with running_app(feedback_settings(tmp_path, predictor.url, logger_max_body_bytes=2000)) as app:
        big = post(app, "request", "big", v1_json(photo(3, size=(300, 300))))
        assert big.status_code == 413 and "LOGGER_MAX_BODY_BYTES" in big.json()["detail"]
        headers, data = event("request", "chunked", v1_json(photo(3, size=(300, 300))))
        chunked = app.post(ROUTE, headers=headers, data=iter([data[:1000], data[1000:]]))
        assert chunked.status_code == 413


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_unpaired_events_expire_and_the_oldest_are_evicted(tmp_path):
    service = started_service(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", logger_pair_timeout_s=30,
                              logger_max_pending=2)
    try:
        clock = Clock()
        events = EndpointEvents(service, clock=clock)
        for i in range(3):
            assert events.receive(*event("request", f"r{i}", v1_json(PHOTOS[0]))).status == 202
        assert events.snapshot() == {"counts": {"received": 3, "pending": 3, "evicted": 1}, "pending": 2}
        clock.now = 31
        assert events.snapshot()["counts"]["expired"] == 2 and events.snapshot()["pending"] == 0
        late = events.receive(*event("response", "r2", v1_answer("cat")))  # its request expired: waits again
        assert late.result == "pending"
    finally:
        service.close()


def test_nothing_is_half_stored_when_the_photo_store_fails_and_a_copy_is_stored_once(tmp_path, database_url):  # noqa: F811
    service = started_service(tmp_path, database_url)
    try:
        saved = []
        real = service.photos.save_new

        def failing_second(photo_):
            if saved:
                raise OSError("disk full")
            saved.append(photo_)
            return real(photo_)

        service.photos.save_new = failing_second
        events = EndpointEvents(service)
        events.receive(*event("request", "half", v1_json(*PHOTOS)))
        with pytest.raises(OSError):  # the app's handlers answer 503 for its own failures
            events.receive(*event("response", "half", v1_answer("cat", "dog")))
        assert endpoint_rows(service) == [] and events.counts["store_failed"] == 1
        assert not list((tmp_path / "store" / "photos").rglob("*.jpg"))  # the first photo's file is gone again
        service.photos.save_new = real
        events.receive(*event("request", "half", v1_json(*PHOTOS)))  # sent again: stored now
        assert events.receive(*event("response", "half", v1_answer("cat", "dog"))).status == 201
        assert len(endpoint_rows(service)) == 2
        again = EndpointEvents(service)  # another replica, or this app restarted: the database knows
        again.receive(*event("response", "half", v1_answer("cat", "dog")))
        assert again.receive(*event("request", "half", v1_json(*PHOTOS))).result == "duplicate"
        assert len(endpoint_rows(service)) == 2
    finally:
        service.close()


def test_parse_event_reads_kserve_attributes():
    headers, data = event("response", "abc", v1_answer("cat"), modelversion="3")
    parsed = parse_event(headers, data)
    assert (parsed.id, parsed.type, parsed.inference_service, parsed.model_version) == (
        "abc", RESPONSE_TYPE, "catdog", "3")
    assert json.loads(parsed.data) == v1_answer("cat") and parsed.time is not None


def test_pending_bodies_are_bounded_in_bytes_too():
    dropped = []
    pending = PendingEvents(60, 100, dropped.append, clock=Clock(), max_bytes=3000)
    for i in range(3):
        assert pending.offer(parse_event(*event("request", f"b{i}", b"x" * 1200))) == "pending"
    assert dropped == ["evicted"] and len(pending) == 2
    pending.finish("b1")
    assert pending.offer(parse_event(*event("request", "b3", b"x" * 1200))) == "pending" and dropped == ["evicted"]


def test_structured_mode_and_unexpected_bodies_are_read_or_refused_never_5xx(sink):
    structured = {"specversion": "1.0", "id": "s1", "source": "x", "type": REQUEST_TYPE,
                  "datacontenttype": "application/json", "data": v1_json(PHOTOS[0])}
    answer = sink.post(ROUTE, data=json.dumps(structured), headers={"Content-Type": "application/cloudevents+json"})
    assert answer.status_code == 202, answer.text
    assert post(sink, "response", "s1", v1_answer("cat")).status_code == 201
    for kind, body in (("request", {"instances": [{"image_bytes": {"b64": base64.b64encode(PHOTOS[0]).decode()}}]}),
                       ("response", {"predictions": [{"label": "cat", "probabilities": {"cat": "high"}}]})):
        last = post(sink, kind, "odd", body)
    assert last.status_code == 422


def test_pending_events_pair_in_either_order():
    dropped = []
    pending = PendingEvents(60, 10, dropped.append, clock=Clock())
    request = parse_event(*event("request", "p", v1_json(PHOTOS[0])))
    response = parse_event(*event("response", "p", v1_answer("cat")))
    assert pending.offer(response) == "pending"
    assert pending.offer(response) == "duplicate"
    assert pending.offer(request) == (request, response)
    assert pending.offer(request) == "duplicate" and len(pending) == 0 and dropped == []


def test_0004_adds_the_endpoint_columns_to_a_0003_database_that_holds_rows(database_url):  # noqa: F811
    from datetime import datetime

    from alembic import command
    from sqlalchemy import JSON, DateTime, bindparam
    from sqlalchemy.exc import IntegrityError

    from feedback.store.db import alembic_config, migrate, open_database

    database = open_database(database_url)
    created = datetime(2026, 1, 2, 3, 4, 5)
    insert = text("INSERT INTO predictions (id, created_at, photo_sha256, model_name, label, confidence, "
                  "probabilities, latency_ms, source) VALUES (:id, :at, :sha, 'catdog', 'cat', 0.6, :probabilities, "
                  "12.0, :source)").bindparams(bindparam("at", type_=DateTime()), bindparam("probabilities", type_=JSON()))
    try:
        with database.writing() as session:
            command.upgrade(alembic_config(session.connection()), "0003")
            session.execute(text("INSERT INTO photos (sha256, format, width, height, size_bytes, uri, created_at) "
                                 "VALUES (:sha, 'JPEG', 64, 48, 100, 'x.jpg', :at)")
                            .bindparams(bindparam("at", type_=DateTime())), {"sha": "a" * 64, "at": created})
            for i in (1, 2):
                session.execute(insert, {"id": f"p{i}", "sha": "a" * 64, "at": created, "source": "api",
                                         "probabilities": {"cat": 0.6, "dog": 0.4}})
        assert migrate(database) == "0005"
        with database.writing() as session:
            old = session.get(Prediction, "p1")
            assert (old.inference_service, old.event_id, old.event_index) == (None, None, None)  # many NULLs: fine
            old.source, old.inference_service, old.event_id, old.event_index = "endpoint", "catdog", "e1", 0
        with pytest.raises(IntegrityError), database.writing() as session:
            twin = session.get(Prediction, "p2")
            twin.event_id, twin.event_index = "e1", 0
        with database.read() as session:
            assert session.get(Prediction, "p1").inference_service == "catdog"
        with database.writing() as session:
            command.downgrade(alembic_config(session.connection()), "0003")
        assert "event_id" not in {c["name"] for c in inspect(database.engine).get_columns("predictions")}
        assert migrate(database) == "0005"
        with database.read() as session:
            assert session.get(Prediction, "p1").event_id is None and session.get(Prediction, "p1").source == "endpoint"
    finally:
        database.close()


def test_the_sinks_outcomes_reach_the_apps_prometheus_counters(sink):
    """catdog_app_logger_events_total{outcome} counts stored pairs and refused events, and each stored
    prediction is an upload of source endpoint (feedback/monitoring/metrics.py, read as Prometheus would)."""
    from feedback.monitoring.metrics import APP_REGISTRY

    def value(name, **labels):
        return APP_REGISTRY.get_sample_value(name, labels) or 0.0

    before = (value("catdog_app_logger_events_total", outcome="stored"),
              value("catdog_app_logger_events_total", outcome="rejected"),
              value("catdog_app_uploads_total", source="endpoint"))
    event_id = str(uuid.uuid4())
    post(sink, "request", event_id, v1_json(*PHOTOS))
    assert post(sink, "response", event_id, v1_answer("cat", "dog"), modelversion="7").status_code == 201
    assert sink.post(ROUTE, data=b"{}", headers={"Content-Type": "application/json"}).status_code == 400
    after = (value("catdog_app_logger_events_total", outcome="stored"),
             value("catdog_app_logger_events_total", outcome="rejected"),
             value("catdog_app_uploads_total", source="endpoint"))
    assert [a - b for a, b in zip(after, before)] == [1, 1, 2]
    scraped = sink.get("/metrics").text
    assert 'catdog_app_logger_events_total{outcome="stored"}' in scraped
