"""Fixtures and helpers for the feedback app's tests (tests/feedback/ and the retraining tests).

- ``predictor`` (session): the REAL predictor (serving/, ONNX Runtime) serving the tiny test model
  (tests/serving_fixtures.py) on 127.0.0.1; ``.url``.
- ``feedback_settings(tmp_path, predictor_url, **changes)``: Settings with the store in tmp_path
  (SQLite unless database_url is given) and the repair loop off.
- ``running_app(settings, predictor=None)``: a started FeedbackService (optionally with its own
  predictor client) behind the app, served by uvicorn on a free
  loopback port in a thread; yields an ``AppClient`` (``.url``, ``.service``, ``.get/.post``,
  ``.predict(bytes)``, ``.validate(id, label)``); closes the service on exit.
- ``app`` (function): running_app on SQLite against ``predictor``.
- ``stub_server(handler)``: a loopback HTTP server answering with ``handler(method, path, headers,
  body) -> (status, headers, body)``; for a slow, broken or Vertex-like predictor.
- ``photo(seed)``: a distinct 64x48 JPEG (tests.serving_fixtures.photo).
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests.helpers import LOOPBACK, free_port, uvicorn_in_thread
from tests.serving_fixtures import make_model, photo, run_server, tiny_model_dir

__all__ = ["photo"]

# the newest Alembic revision (feedback/store/migrations/versions): one place for the tests that check it
SCHEMA_HEAD = "0007"


def store_at_revision(database, revision: str, prediction_ids=("p1",), sha256: str = "a" * 64,
                      label: str = "cat", source: str = "api") -> None:
    """Migrate `database` (feedback.store.db) to an older `revision` and write, with raw SQL in the
    columns every revision has, one photo and its predictions (probabilities cat 0.6 / dog 0.4 for
    cat, else 0.3 / 0.7): a store of that age that holds rows, for the migration tests."""
    from datetime import datetime

    from alembic import command
    from sqlalchemy import JSON, DateTime, bindparam, text

    from feedback.store.db import alembic_config

    created = datetime(2026, 1, 2, 3, 4, 5)
    confidence, probabilities = (0.6, {"cat": 0.6, "dog": 0.4}) if label == "cat" else (0.7, {"cat": 0.3, "dog": 0.7})
    with database.writing() as session:
        command.upgrade(alembic_config(session.connection()), revision)
        session.execute(text("INSERT INTO photos (sha256, format, width, height, size_bytes, uri, created_at) "
                             "VALUES (:sha, 'JPEG', 64, 48, 100, 'x.jpg', :at)")
                        .bindparams(bindparam("at", type_=DateTime())), {"sha": sha256, "at": created})
        insert = text("INSERT INTO predictions (id, created_at, photo_sha256, model_name, label, confidence, "
                      "probabilities, latency_ms, source) VALUES (:id, :at, :sha, 'catdog', :label, :confidence, "
                      ":probabilities, 12.0, :source)").bindparams(bindparam("at", type_=DateTime()),
                                                                  bindparam("probabilities", type_=JSON()))
        for prediction_id in prediction_ids:
            session.execute(insert, {"id": prediction_id, "at": created, "sha": sha256, "label": label,
                                     "confidence": confidence, "probabilities": probabilities, "source": source})


@pytest.fixture(scope="session")
def predictor():
    with run_server(make_model(tiny_model_dir())) as server:
        yield server


def feedback_settings(tmp_path, predictor_url: str, **changes):
    from feedback.settings import Settings

    values = dict(predictor_url=predictor_url, database_url=f"sqlite:///{tmp_path}/store/feedback.db",
                  feedback_uri=str(tmp_path / "store"), repair_interval_s=0, predictor_timeout_s=5)
    values.update(changes)
    return Settings(**values)


@dataclass
class AppClient:
    url: str
    service: object  # feedback.labelling.service.FeedbackService

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, timeout=kwargs.pop("timeout", 30), **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.url + path, timeout=kwargs.pop("timeout", 30), **kwargs)

    def predict(self, data: bytes, name: str = "photo.jpg", **kwargs) -> requests.Response:
        return self.post("/api/predict", files={"image": (name, data, "image/jpeg")}, **kwargs)

    def validate(self, prediction_id: str, label: str, **body) -> requests.Response:
        headers = body.pop("headers", None)
        return self.post(f"/api/predictions/{prediction_id}/validation", json={"label": label, **body},
                         headers=headers)


def isolated_training(settings):
    """The default training target with its registry beside the test's store: never the repository's
    own registry/ (a `make run` there would put its champion and suspects into the test's app)."""
    from pathlib import Path

    from feedback.retraining.config import parse_training_words

    return parse_training_words([f"REGISTRY={Path(settings.feedback_uri).parent / 'registry'}"], settings.feedback_uri)


@contextmanager
def running_app(settings, predictor=None, **service_options):
    """service_options: FeedbackService's `training` and `launchers`."""
    from feedback.web.app import create_app
    from feedback.labelling.service import FeedbackService

    service_options.setdefault("training", isolated_training(settings))
    service = FeedbackService(settings, predictor=predictor, **service_options)
    service.start()
    try:
        with uvicorn_in_thread(create_app(service)) as url:
            yield AppClient(url, service)
    finally:
        service.close()  # idempotent: the lifespan closed it already when uvicorn shut down cleanly


@pytest.fixture
def app(tmp_path, predictor):
    with running_app(feedback_settings(tmp_path, predictor.url)) as client:
        yield client


@contextmanager
def stub_server(handler):
    """handler(method, path, headers, body) -> (status, headers dict, body bytes or JSON-able)."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            status, headers, payload = handler(self.command, self.path, dict(self.headers), body)
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                for key, value in {"content-type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                pass

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def unused_url() -> str:
    """A loopback URL where nothing listens (a predictor that is down)."""
    return f"http://{LOOPBACK}:{free_port()}"


class FakePredictor:
    """Stands in for feedback.predictor_client.client.PredictorClient in service-level tests: answers from a
    table of sha256 -> probabilities (default: cat 0.6), or raises `error` when set. With `ood`
    (the model's metadata, e.g. {"method": "energy", "threshold": 5.0}) it is a model with an
    out-of-distribution score: every answer carries ood_score (flag(data, score) sets a photo's,
    default 1.0) and neither = score > threshold, and status() gives that metadata; without it,
    answers have neither (a model exported before the score)."""

    explanations = True
    protocol = "kserve"

    def __init__(self, version: str = "v1", ood: dict | None = None):
        self.version = version
        self.ood = ood
        self.answers: dict[str, dict[str, float]] = {}
        self.scores: dict[str, float] = {}
        self.embeddings: dict[str, tuple[float, ...]] = {}  # embed(data, vector): a model with the embedding output
        self.error: Exception | None = None
        self.calls = 0

    def answer(self, data: bytes, probabilities: dict[str, float]) -> None:
        import hashlib

        self.answers[hashlib.sha256(data).hexdigest()] = probabilities

    def flag(self, data: bytes, score: float) -> None:
        """The photo's ood_score (past the threshold: flagged as neither)."""
        import hashlib

        self.scores[hashlib.sha256(data).hexdigest()] = score

    def embed(self, data: bytes, vector) -> None:
        """The photo's embedding in the answers (photos never embedded get none)."""
        import hashlib

        self.embeddings[hashlib.sha256(data).hexdigest()] = tuple(float(v) for v in vector)

    def predict(self, image: bytes, explain: bool = False):
        import hashlib

        from feedback.predictor_client.client import PredictorAnswer

        self.calls += 1
        if self.error is not None:
            raise self.error
        sha256 = hashlib.sha256(image).hexdigest()
        probabilities = self.answers.get(sha256, {"cat": 0.6, "dog": 0.4})
        label = max(probabilities, key=probabilities.get)
        explanation = {"method": "grad-cam", "class": label, "grid": [2, 2], "values": [[0.1, 0.9], [0.0, 0.5]]} if explain else None
        score = self.scores.get(sha256, 1.0) if self.ood else None
        return PredictorAnswer(label, probabilities, "catdog", self.version, 0.012, explanation, ood_score=score,
                               neither=None if score is None else score > self.ood["threshold"],
                               embedding=self.embeddings.get(sha256))

    def status(self, timeout: float | None = None):
        from feedback.predictor_client.client import PredictorStatus

        return PredictorStatus("fake://", "kserve", True, True, self.version, ["cat", "dog"], ood=self.ood)

    def close(self) -> None:
        pass


DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.needs_postgres),
             pytest.param("mariadb", marks=pytest.mark.needs_mariadb)]


@pytest.fixture(params=DATABASES)
def database_url(request, tmp_path) -> str:
    """A fresh, empty database on each backend (the server ones skip with a reason when absent)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/db/feedback.db"
    return request.getfixturevalue(f"{request.param}_db_url")


def started_service(tmp_path, database_url: str, predictor=None, training=None, launchers=None, **changes):
    """A FeedbackService on `database_url` with its photos under tmp_path/store, migrated and repaired
    (training, launchers: where its retraining runs go; settings `changes`)."""
    from feedback.labelling.service import FeedbackService

    settings = feedback_settings(tmp_path, "http://127.0.0.1:9", database_url=database_url, **changes)
    service = FeedbackService(settings, predictor=predictor or FakePredictor(), training=training or isolated_training(settings),
                              launchers=launchers)
    service.start(background=False)
    return service
