"""The feedback app under attack and bad input (issue 17's probes), as tests/test_serving_hardening.py
is for the predictor: every answer is JSON {"detail": ...}, a 4xx or a 503, and after each case
the store is consistent (every photo file has its row, every row its file, nothing half-stored).

Cases that touch the database run on SQLite, PostgreSQL and MariaDB: one app per database for
the whole module (the servers are the session's, tests/db_servers.py). A read-only or
unreachable database is made with SQLAlchemy connection events on the app's own engine (each new
connection is set read-only, or dialled at a closed port / missing file), so the errors are the
real drivers' own. Whether a body was read is measured by the bytes the app's receive() handed
out (ReceiveCounter), never by time.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import event, select

from tests.feedback_fixtures import DATABASES, feedback_settings, photo, predictor, stub_server, unused_url  # noqa: F401 (fixture)
from tests.helpers import LOOPBACK, free_port, image_bytes, png_header_only, uvicorn_in_thread

TOKEN = "battery-token-7f3a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BIG = 32 * 1024 * 1024  # an unauthenticated body this large must not be read at all
MAX_REQUEST = 2_000_000
SECRET = "pr3dict0r-pa55word"


class ReceiveCounter:
    """Wraps an ASGI app; counts the body bytes its receive() handed to the app, per path."""

    def __init__(self, app):
        self.app = app
        self.read: dict[str, int] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]

        async def counted():
            message = await receive()
            self.read[path] = self.read.get(path, 0) + len(message.get("body", b""))
            return message

        return await self.app(scope, counted, send)


class Running:
    def __init__(self, url, service, counter):
        self.url, self.service, self.counter = url, service, counter

    def request(self, method, path, **kwargs) -> requests.Response:
        return requests.request(method, self.url + path, timeout=kwargs.pop("timeout", 60), **kwargs)

    def predict(self, data: bytes, **kwargs) -> requests.Response:
        return self.request("POST", "/api/predict", files={"image": ("p.jpg", data, "image/jpeg")}, **kwargs)


@contextmanager
def serve(settings, predictor=None):
    from feedback.web.app import create_app
    from feedback.web.server import uvicorn_options
    from feedback.labelling.service import FeedbackService

    service = FeedbackService(settings, predictor=predictor)
    service.start(background=False)
    counter = ReceiveCounter(create_app(service))
    try:
        with uvicorn_in_thread(counter, **uvicorn_options(settings)) as url:
            yield Running(url, service, counter)
    finally:
        service.close()


@pytest.fixture(scope="module", params=DATABASES)
def app(request, predictor, tmp_path_factory):  # noqa: F811 (the fixture)
    """One app per database for the module, with APP_TOKEN set and small request limits."""
    tmp = tmp_path_factory.mktemp(f"battery-{request.param}")
    url = (f"sqlite:///{tmp}/db/feedback.db" if request.param == "sqlite"
           else request.getfixturevalue(f"{request.param}_server").new_database())
    settings = feedback_settings(tmp, predictor.url, database_url=url, app_token=TOKEN,
                                 max_request_bytes=MAX_REQUEST, header_timeout_s=1, body_timeout_s=1)
    with serve(settings) as running:
        running.backend = request.param
        yield running


@pytest.fixture(scope="module")
def prediction_id(app) -> str:
    response = app.predict(photo(900))
    assert response.status_code == 200, response.text
    return response.json()["id"]


def store_files(service) -> set[str]:
    root = Path(service.settings.feedback_uri) / "photos"
    return {p.as_posix() for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def assert_consistent(service) -> None:
    """Every photo file has its row and every row its file; every prediction has its photo."""
    from feedback.store.tables import Photo, Prediction

    with service.db.read() as session:
        uris = set(session.scalars(select(Photo.uri)))
        orphans = session.scalars(select(Prediction.id).where(~Prediction.photo.has())).all()
    assert store_files(service) == {Path(u).as_posix() for u in uris}
    assert orphans == []


def assert_json_error(response: requests.Response, status: int, words: str = "") -> str:
    assert response.status_code == status, f"{response.status_code} {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    detail = response.json()["detail"]
    assert words in json.dumps(detail), f"{detail!r} lacks {words!r}"
    return json.dumps(detail)


# -- authentication before any body is read ------------------------------------------------------
WRITE_ROUTES = ["/api/retrain", "/api/train", "/api/predictions/{id}/validation", "/api/upload-data",
                "/api/runs/nope/cancel", "/api/training-photos/import"]


@pytest.mark.parametrize("path", WRITE_ROUTES)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_unauthenticated_big_body_is_401_and_never_read(app, prediction_id, path, chunked):
    path = path.format(id=prediction_id)
    before = app.counter.read.get(path, 0)
    body = (b"x" * (1024 * 1024) for _ in range(BIG // (1024 * 1024))) if chunked else b"{" * BIG
    response = app.request("POST", path, data=body, headers={"content-type": "application/json"})
    assert_json_error(response, 401, "APP_TOKEN")
    assert response.headers["www-authenticate"] == "Bearer"
    assert app.counter.read.get(path, 0) == before
    assert app.request("GET", "/health").json() == {"status": "ok"}  # the connection pool still works


def test_a_cross_origin_big_body_is_403_and_never_read(app):
    before = app.counter.read.get("/api/predict", 0)
    response = app.request("POST", "/api/predict", data=b"x" * BIG, headers={
        "content-type": "application/json", "Origin": "https://evil.example"})
    assert_json_error(response, 403, "cross-origin")
    assert app.counter.read.get("/api/predict", 0) == before


# -- bodies capped per route before parsing; malformed bodies; NUL; huge offsets ---------------------
def _validation(prediction_id: str) -> str:
    return f"/api/predictions/{prediction_id}/validation"


class Chunks:
    """A body sent chunked (no length), the same on every iteration (each database's run of a case)."""

    def __init__(self, chunk: bytes, count: int):
        self.chunk, self.count = chunk, count

    def __iter__(self):
        return iter([self.chunk] * self.count)


# (case id, method, path ({id}: a stored prediction), requests kwargs, status, words, most bytes read)
BAD_REQUESTS = [
    ("predict-over-photo-limit", "POST", "/api/predict", {"data": b"x" * 20_000_000,
                                                          "headers": {"content-type": "application/json"}},
     413, "MAX_PHOTO_BYTES", 0),
    ("validation-json-over-limit", "POST", "/api/predictions/{id}/validation",
     {"data": b" " * 1_000_000, "headers": {"content-type": "application/json", **AUTH}}, 413, "over the limit", 0),
    ("validation-chunked-over-limit", "POST", "/api/predictions/{id}/validation",
     {"data": Chunks(b" " * 65536, 40), "headers": {"content-type": "application/json", **AUTH}},
     413, "over the limit", 1_000_000),  # of the 2.6 MB sent
    ("upload-over-request-limit", "POST", "/api/upload-data",
     {"files": {"archive": ("a.zip", b"x" * (MAX_REQUEST + 1))}, "headers": AUTH}, 413, "MAX_REQUEST_BYTES", 0),
    ("retrain-over-limit", "POST", "/api/retrain",
     {"data": b"[" * 500_000, "headers": {"content-type": "application/json", **AUTH}}, 413, "over the limit", 0),
    ("validation-malformed-json", "POST", "/api/predictions/{id}/validation",
     {"data": b'{"label": ', "headers": {"content-type": "application/json", **AUTH}}, 422, "json_invalid", None),
    ("retrain-malformed-json", "POST", "/api/retrain",
     {"data": b"{nope", "headers": {"content-type": "application/json", **AUTH}}, 422, "json_invalid", None),
    ("validation-nul-by", "POST", "/api/predictions/{id}/validation",
     {"json": {"label": "cat", "by": "a\x00b"}, "headers": AUTH}, 422, "NUL", None),
    ("validation-nul-note", "POST", "/api/predictions/{id}/validation",
     {"json": {"label": "cat", "note": "\x00"}, "headers": AUTH}, 422, "NUL", None),
    ("validation-nul-label", "POST", "/api/predictions/{id}/validation",
     {"json": {"label": "c\x00at"}, "headers": AUTH}, 422, "NUL", None),
    ("validation-nul-neither", "POST", "/api/predictions/{id}/validation",
     {"json": {"label": "neit\x00her"}, "headers": AUTH}, 422, "NUL", None),
    ("validation-unknown-label", "POST", "/api/predictions/{id}/validation",
     {"json": {"label": "bird"}, "headers": AUTH}, 422, "['cat', 'dog', 'neither']", None),
    ("validation-without-by", "POST", "/api/predictions/{id}/validation",  # APP_TOKEN is set: a name is required
     {"json": {"label": "cat", "by": " "}, "headers": AUTH}, 422, "'by' (who gives this verdict) is required", None),
    ("upload-without-by", "POST", "/api/upload-data", {"files": {"files[]": ("a.jpg", photo(901))},
                                                       "data": {"labels[]": "cat"}, "headers": AUTH},
     422, "'by' (who gives this verdict) is required", None),
    ("second-opinion-huge-by", "GET", "/api/review-queue", {"params": {"queue": "second-opinion", "by": "x" * 5000}},
     422, "at most 100 characters", None),
    ("second-opinion-nul-by", "GET", "/api/review-queue", {"params": {"queue": "second-opinion", "by": "a\x00"}},
     422, "NUL", None),
    ("filter-bad-flagged", "GET", "/api/predictions", {"params": {"flagged": "maybe"}}, 422, "flagged", None),
    ("history-bad-status", "GET", "/history", {"params": {"status": "nope"}}, 422, "neither", None),
    ("validation-nul-id", "POST", "/api/predictions/ab%00cd/validation", {"json": {"label": "cat"}, "headers": AUTH},
     422, "NUL", None),
    ("get-nul-id", "GET", "/api/predictions/ab%00cd", {}, 422, "NUL", None),
    ("photo-nul-id", "GET", "/api/predictions/%00/photo", {}, 422, "NUL", None),
    ("filter-nul", "GET", "/api/predictions", {"params": {"model_version": "v\x001"}}, 422, "NUL", None),
    ("upload-nul-by", "POST", "/api/upload-data", {"files": {"files[]": ("a.jpg", photo(901))},
                                                   "data": {"labels[]": "cat", "by": "x\x00"}, "headers": AUTH},
     422, "NUL", None),
    ("upload-nul-label", "POST", "/api/upload-data", {"files": {"files[]": ("a.jpg", photo(901))},
                                                      "data": {"labels[]": "ca\x00t"}, "headers": AUTH},
     422, "NUL", None),
    ("retrain-nul-target", "POST", "/api/retrain", {"json": {"target": "lo\x00cal"}, "headers": AUTH}, 422, "NUL", None),
    ("predictions-huge-offset", "GET", "/api/predictions", {"params": {"offset": 2**63}}, 422, "offset", None),
    ("predictions-huge-limit", "GET", "/api/predictions", {"params": {"limit": 2**63}}, 422, "limit", None),
    ("runs-huge-offset", "GET", "/api/runs", {"params": {"offset": 2**63}}, 422, "offset", None),
    ("review-queue-huge-limit", "GET", "/api/review-queue", {"params": {"limit": 2**63}}, 422, "limit", None),
    ("decompression-size-png", "POST", "/api/predict",
     {"files": {"image": ("big.png", png_header_only(6300, 6300), "image/png")}}, 422,
     "decompression bomb: 6300x6300", None),
    ("training-import-nul", "POST", "/api/training-photos/import", {"params": {"x": "\x00"}, "headers": AUTH},
     422, "NUL", None),
    ("training-import-wrong-method", "DELETE", "/api/training-photos/import", {"headers": AUTH}, 405,
     "Method Not Allowed", None),
    ("training-order-unknown", "GET", "/api/review-queue", {"params": {"order": "training_suspects_last"}}, 422,
     "training_suspects_first", None),
    ("unknown-route", "GET", "/nope", {}, 404, "Not Found", None),
    ("wrong-method", "DELETE", "/api/predict", {}, 405, "Method Not Allowed", None),
    ("static-missing", "GET", "/static/nope.js", {}, 404, "Not Found", None),
]


@pytest.mark.parametrize("case, method, path, kwargs, status, words, most_read", BAD_REQUESTS,
                         ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_get_a_json_4xx_and_leave_the_store_consistent(app, prediction_id, case, method, path, kwargs,
                                                                    status, words, most_read):
    path = path.format(id=prediction_id)
    before = app.counter.read.get(urlsplit(app.url + path).path, 0)
    assert_json_error(app.request(method, path, **kwargs), status, words)
    if most_read is not None:
        assert app.counter.read.get(urlsplit(app.url + path).path, 0) - before <= most_read
    assert_consistent(app.service)
    detail = app.request("GET", f"/api/predictions/{prediction_id}").json()
    assert all("\x00" not in (v["by"] or "") + (v["note"] or "") for v in detail["validations"])


# -- labels: one normalising function --------------------------------------------------------------
def test_labels_are_normalised_the_same_in_validation_and_upload(app, prediction_id):
    validated = app.request("POST", _validation(prediction_id), json={"label": "  dog\n", "by": "ana"}, headers=AUTH)
    assert validated.status_code == 201, validated.text
    assert validated.json()["validated_label"] == "dog"
    uploaded = app.request("POST", "/api/upload-data", files={"files[]": ("c.jpg", photo(902))},
                           data={"labels[]": " cat ", "by": "ana"}, headers=AUTH)
    assert uploaded.status_code == 200, uploaded.text
    assert [a["label"] for a in uploaded.json()["added"]] == ["cat"]
    other = app.predict(photo(907)).json()["id"]
    neither = app.request("POST", _validation(other), json={"label": " neither\t", "by": "ana"}, headers=AUTH)
    assert neither.status_code == 201, neither.text
    assert (neither.json()["validated_label"], neither.json()["status"]) == ("neither", "neither")
    uploaded = app.request("POST", "/api/upload-data", files={"files[]": ("n.jpg", photo(908))},
                           data={"labels[]": "\nneither ", "by": "ana"}, headers=AUTH)
    assert [(a["label"], a["outcome"]) for a in uploaded.json()["added"]] == [("neither", "neither: not in the dataset")]
    assert_consistent(app.service)


def test_upload_data_with_every_photo_rejected_is_422_with_the_reasons(app):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("cat/tiny.png", image_bytes("PNG", (10, 10)))
        archive.writestr("dog/text.jpg", b"not a photo")
        archive.writestr("bird/x.jpg", photo(903))
    files_before = store_files(app.service)
    response = app.request("POST", "/api/upload-data", files={"archive": ("set.zip", buffer.getvalue())},
                           data={"by": "ana"}, headers=AUTH)
    detail = assert_json_error(response, 422, "no photo was added")
    assert all(name in detail for name in ("cat/tiny.png", "dog/text.jpg", "bird/x.jpg", "too small"))
    assert store_files(app.service) == files_before
    mixed = app.request("POST", "/api/upload-data", files=[("files[]", ("ok.jpg", photo(904))),
                                                           ("files[]", ("bad.jpg", b"nope"))],
                        data={"labels[]": "cat", "by": "ana"}, headers=AUTH)
    assert mixed.status_code == 200 and [r["name"] for r in mixed.json()["rejected"]] == ["bad.jpg"]
    assert_consistent(app.service)


# -- a database that cannot write or cannot be reached ----------------------------------------------
READ_ONLY = {
    "sqlite": "PRAGMA query_only = ON",
    "postgresql": "SET default_transaction_read_only = on",
    "mysql": "SET SESSION TRANSACTION READ ONLY",
}


@contextmanager
def broken_database(service, how: str):
    """Each new connection of the app's engine is read-only, or dials nowhere, until the end."""
    engine = service.db.engine
    dialect = engine.dialect.name
    closed_port = free_port()

    def read_only(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute(READ_ONLY[dialect])
        cursor.close()
        dbapi_connection.commit()  # PostgreSQL: a SET in a transaction that the pool rolls back is undone

    def nowhere(_dialect, _record, cargs, cparams):
        if dialect == "sqlite":
            cargs[0] = "/nonexistent-folder/feedback.db"
        else:
            cparams.update(host=LOOPBACK, port=closed_port)

    name, listener = ("connect", read_only) if how == "read-only" else ("do_connect", nowhere)
    event.listen(engine, name, listener)
    engine.dispose()
    try:
        yield
    finally:
        event.remove(engine, name, listener)
        engine.dispose()


@pytest.mark.parametrize("how", ["read-only", "unreachable"])
def test_a_database_that_cannot_write_is_503_json_and_not_ready(app, prediction_id, how):
    files_before = store_files(app.service)
    with broken_database(app.service, how):
        assert_json_error(app.predict(photo(905)), 503, "database")
        for label in ("cat", "neither"):
            assert_json_error(app.request("POST", _validation(prediction_id), json={"label": label, "by": "ana"}, headers=AUTH),
                              503, "database")
        upload = app.request("POST", "/api/upload-data", files={"files[]": ("u.jpg", photo(906))},
                             data={"labels[]": "dog", "by": "ana"}, headers=AUTH)
        assert_json_error(upload, 503, "database")
        ready = app.request("GET", "/ready")
        assert ready.status_code == 503 and "database" in ready.json()["problems"]
        assert store_files(app.service) == files_before  # no orphan photo file
    assert app.request("GET", "/ready").status_code == 200
    assert_consistent(app.service)
    statuses = {p["id"]: p for p in app.request("GET", "/api/predictions").json()["predictions"]}
    assert prediction_id in statuses  # and nothing half-stored beside it
    assert app.predict(photo(905)).status_code == 200  # the same photo, once the database is back
    assert_consistent(app.service)


# -- secrets, server paths, unexpected errors (SQLite only: no database involved) ---------------------
def test_predictor_credentials_are_never_shown_or_logged(tmp_path, predictor, caplog):  # noqa: F811
    host = urlsplit(predictor.url).netloc
    settings = feedback_settings(tmp_path, f"http://catdog:{SECRET}@{host}")
    caplog.set_level(logging.DEBUG)
    with serve(settings) as running:
        assert running.predict(photo(907)).status_code == 200  # basic auth is sent, the predictor ignores it
        status = running.request("GET", "/api/status").json()
        assert status["predictor"]["url"] == predictor.url and status["predictor"]["ready"]
        answers = [running.request("GET", p).text for p in ("/api/status", "/api/dashboard", "/ready", "/")]
        assert str(tmp_path) not in answers[0] and status["photo_store"] == "local folder"
    down = feedback_settings(tmp_path / "down", unused_url().replace("http://", f"http://u:{SECRET}@"))
    with serve(down) as running:
        failed = running.predict(photo(908))
        assert_json_error(failed, 503, "unreachable")
        answers += [failed.text, running.request("GET", "/ready").text, running.request("GET", "/api/status").text]
    assert repr(settings).count(SECRET) == 0
    for text in [*answers, caplog.text]:
        assert SECRET not in text


def test_an_unexpected_error_is_a_json_500_without_internals(app, monkeypatch, caplog):
    def broken():
        raise RuntimeError("internal detail /srv/secret/path")

    monkeypatch.setattr(app.service, "counts", broken)
    response = app.request("GET", "/api/status")
    detail = assert_json_error(response, 500, "RuntimeError")
    assert "/srv/secret/path" not in detail and "internal detail" in caplog.text


# -- Host header (DNS rebinding) for every loopback bind ------------------------------------------------
@pytest.mark.parametrize("bound, good", [("::1", "[::1]:8000"), ("127.0.0.2", "127.0.0.2:8000"),
                                         ("localhost", "localhost")])
def test_bound_to_any_loopback_address_other_host_names_are_refused(tmp_path, bound, good):
    import httpx

    from feedback.web.app import create_app
    from tests.feedback_fixtures import FakePredictor, started_service

    service = started_service(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", predictor=FakePredictor(), host=bound)
    try:
        app = create_app(service)

        def ask(host: str, method: str = "GET", path: str = "/api/predictions", **kwargs):
            import asyncio

            async def go():
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://x") as client:
                    return await client.request(method, path, headers={"host": host}, **kwargs)

            return asyncio.run(go())

        for host in ("evil.example", "evil.example:8000", "[::2]:8000", "127.0.0.3"):
            refused = ask(host)
            assert refused.status_code == 400 and "invalid Host" in refused.json()["detail"]
        rebound = ask("evil.example", "POST", "/api/predict", files={"image": ("a.jpg", photo(909))})
        assert rebound.status_code == 400
        for host in (good, "127.0.0.1:8000", "localhost:8000", "LOCALHOST"):
            assert ask(host).status_code == 200, host
    finally:
        service.close()


# -- slow clients: headers that never finish, bodies that trickle ----------------------------------------
def _raw(url: str, data: bytes, then: float | None = None) -> bytes:
    """Send `data` on a raw connection, wait for the server to answer or close; the bytes it sent."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):  # b"": the server closed the connection
            answer += chunk
        return answer


def test_a_connection_whose_headers_never_finish_is_closed(app):
    assert _raw(app.url, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ") == b""
    assert _raw(app.url, b"") == b""  # connected, sent nothing


def test_a_body_that_trickles_is_408_and_the_connection_closed(app, prediction_id):
    head = (f"POST {_validation(prediction_id)} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n").encode()
    answer = _raw(app.url, head + b'{"label": ')
    assert answer.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 1 s" in answer
    assert b"connection: close" in answer.lower()
    assert_consistent(app.service)


@pytest.mark.parametrize("implementation", ["httptools", "h11"])
def test_the_header_deadline_spares_a_kept_alive_connection(implementation):
    """The unread rest of a refused body is no new request: the connection stays open past the
    header deadline (uvicorn's keep-alive decides), and a request that starts then is served;
    on a fresh connection, headers that never finish are still dropped."""
    import time

    from catdog.body_limit import header_timeout_protocol

    async def refuse_unread(scope, receive, send):  # answers without reading the body, as a guard does
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 401, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"no"})

    with uvicorn_in_thread(refuse_unread, lifespan="off", timeout_keep_alive=30,
                           http=header_timeout_protocol(0.5, implementation)) as url:
        parts = urlsplit(url)
        with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
            sock.sendall(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 300000\r\n\r\n" + b"y" * 1000)
            assert sock.recv(65536).startswith(b"HTTP/1.1 401 ")
            sock.sendall(b"y" * 299_000)  # the rest of the refused body
            time.sleep(1.0)  # past the header deadline, within the keep-alive
            sock.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 401 ")
        assert _raw(url, b"GET /x HTTP/1.1\r\nHost: a\r\n") == b""


# -- a hung predictor: /health stays independent, /ready bounded -------------------------------------
def test_a_hung_predictor_leaves_health_answering_and_ready_bounded(tmp_path):
    release = threading.Event()

    def hung(method, path, headers, body):
        release.wait(60)
        return 200, {}, {"predictions": [{"label": "cat", "probabilities": {"cat": 0.9, "dog": 0.1}}]}

    with stub_server(hung) as url, serve(feedback_settings(tmp_path, url, predictor_timeout_s=60,
                                                           ready_timeout_s=0.5)) as running:
        with ThreadPoolExecutor(48) as pool:  # more predicts than the thread pool has threads (40)
            pending = [pool.submit(running.predict, photo(910 + i)) for i in range(44)]
            try:
                assert running.request("GET", "/health", timeout=20).json() == {"status": "ok"}
                ready = running.request("GET", "/ready", timeout=20)
                assert ready.status_code == 503 and "within 0.5 s" in ready.json()["problems"]["predictor"]
                status = running.request("GET", "/api/status", timeout=20).json()
                assert status["predictor"]["ready"] is False
            finally:
                release.set()
            assert all(f.result().status_code == 200 for f in pending)
        assert_consistent(running.service)
