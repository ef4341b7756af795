"""The feedback app's REST API over HTTP, against the real predictor (tiny model) on loopback:
the old API's routes, validation and history, uploads, status, bad input, a predictor that is
down or slow, the token, and restarts."""

from __future__ import annotations

import base64
import io
import time
import zipfile
from pathlib import Path

import pytest

from tests.feedback_fixtures import app, feedback_settings, photo, predictor, running_app, stub_server, unused_url  # noqa: F401
from tests.helpers import image_bytes, png_header_only

PREDICTION_KEYS = {"id", "predicted_class", "confidence", "probabilities", "model_version", "prediction_time", "timestamp"}


def test_predict_multipart_answers_the_old_apis_fields_and_stores_it(app):
    response = app.predict(photo(1), name="kitty.jpg")
    assert response.status_code == 200, response.text
    body = response.json()
    assert PREDICTION_KEYS <= set(body)
    assert body["predicted_class"] in ("cat", "dog") and set(body["probabilities"]) == {"cat", "dog"}
    assert body["confidence"] == pytest.approx(body["probabilities"][body["predicted_class"]])
    assert body["model_version"] == app.service.predictor_status().model_version
    assert 0 < body["prediction_time"] < 30 and body["timestamp"].endswith("Z")
    assert body["status"] == "unvalidated" and body["photo"]["format"] == "JPEG"
    stored = app.get(f"/api/predictions/{body['id']}").json()
    assert stored["predicted_class"] == body["predicted_class"] and stored["validations"] == []
    photo_response = app.get(body["photo"]["url"])
    assert photo_response.content == photo(1) and photo_response.headers["content-type"] == "image/jpeg"
    assert photo_response.headers["x-content-type-options"] == "nosniff"


def test_predict_json_base64_and_the_same_label_as_multipart(app):
    multipart = app.predict(photo(2)).json()
    response = app.post("/api/predict", json={"image_b64": base64.b64encode(photo(2)).decode()})
    assert response.status_code == 200, response.text
    assert response.json()["probabilities"] == pytest.approx(multipart["probabilities"])
    assert response.json()["photo"]["sha256"] == multipart["photo"]["sha256"]


def test_predict_with_an_explanation(app):
    body = app.predict(photo(3), params={"explain": "true"}).json()
    explanation = body["explanation"]  # the tiny model's 32 px input gives a 1x1 Grad-CAM grid
    assert explanation["method"] == "grad-cam" and explanation["class"] == body["predicted_class"]
    assert explanation["grid"] == [1, 1] and 0 <= explanation["values"][0][0] <= 1
    plain = app.predict(photo(4)).json()
    assert plain["explanation"] is None
    explained = app.post(f"/api/predictions/{plain['id']}/explanation")
    assert explained.status_code == 200 and explained.json()["explanation"]["method"] == "grad-cam"
    assert app.get(f"/api/predictions/{plain['id']}").json()["explanation"] is not None  # kept


@pytest.mark.parametrize("data, status, words", [
    (b"", 422, "empty file"),
    (b"<html>not an image</html>", 422, "not a decodable image"),
    (png_header_only(30_000, 30_000), 422, "decompression bomb"),
    (image_bytes("PNG", (10, 10)), 422, "too small"),
])
def test_bad_photos_are_4xx_with_the_reason_and_store_nothing(app, data, status, words):
    response = app.predict(data)
    assert response.status_code == status and words in response.json()["detail"]
    assert app.get("/api/status").json()["counts"]["photos"] == 0


def test_malformed_requests(app):
    cases = [
        app.post("/api/predict", files={"other": ("a.jpg", photo(1))}),
        app.post("/api/predict", json={"image_b64": "!!! not base64 !!!"}),
        app.post("/api/predict", json={"wrong": 1}),
        app.post("/api/predict", data=b"{not json", headers={"content-type": "application/json"}),
        app.post("/api/predict", data=b"raw", headers={"content-type": "text/plain"}),
        app.post("/api/predictions/nope/validation", json={"label": "dog"}),
        app.post("/api/predictions/nope/validation", data=b"[", headers={"content-type": "application/json"}),
        app.get("/api/predictions/nope"),
        app.get("/api/predictions/nope/photo"),
        app.get("/api/predictions", params={"status": "maybe"}),
        app.get("/api/predictions", params={"limit": 0}),
    ]
    assert [r.status_code for r in cases] == [400, 400, 400, 400, 415, 404, 422, 404, 404, 422, 422]
    assert "'image'" in cases[0].json()["detail"] and "base64" in cases[1].json()["detail"]


def test_an_oversized_json_photo_is_413_before_it_is_read(tmp_path, predictor):
    settings = feedback_settings(tmp_path, predictor.url, max_photo_bytes=20_000)
    with running_app(settings) as small:
        body = {"image_b64": base64.b64encode(b"\xff" * 40_000).decode()}
        response = small.post("/api/predict", json=body)
        assert response.status_code == 413 and "MAX_PHOTO_BYTES" in response.json()["detail"]
        chunked = small.post("/api/predict", data=iter([b'{"image_b64": "', b"A" * 200_000, b'"}']),
                             headers={"content-type": "application/json"})
        assert chunked.status_code == 413
        fits = {"image_b64": base64.b64encode(photo(1)).decode()}
        assert small.post("/api/predict", json=fits).status_code == 200


def test_oversized_uploads_get_413(tmp_path, predictor):
    settings = feedback_settings(tmp_path, predictor.url, max_photo_bytes=20_000, max_request_bytes=200_000)
    with running_app(settings) as small:
        big_photo = image_bytes("PNG", (120, 120))  # ~43 KB of noise
        assert len(big_photo) > 20_000
        response = small.predict(big_photo, name="big.png")
        assert response.status_code == 413 and "MAX_PHOTO_BYTES" in response.json()["detail"]
        huge = small.post("/api/predict", files={"image": ("x.jpg", b"\xff" * 300_000)})  # capped by the photo's limit
        assert huge.status_code == 413 and "MAX_PHOTO_BYTES" in huge.json()["detail"]
        zipped = small.post("/api/upload-data", files={"archive": ("x.zip", b"\xff" * 300_000)})
        assert zipped.status_code == 413 and "MAX_REQUEST_BYTES" in zipped.json()["detail"]
        assert small.get("/api/status").json()["counts"]["photos"] == 0


def test_validate_confirm_then_correct_keeps_the_history(app):
    body = app.predict(photo(5)).json()
    predicted = body["predicted_class"]
    other = "dog" if predicted == "cat" else "cat"
    confirm = app.validate(body["id"], predicted, by="ana", note="sure")
    assert confirm.status_code == 201 and confirm.json()["status"] == "confirmed"
    correct = app.validate(body["id"], other, by="ben")
    assert correct.status_code == 201, correct.text
    detail = correct.json()
    assert detail["status"] == "corrected" and detail["validated_label"] == other
    assert [(v["label"], v["by"], v["note"]) for v in detail["validations"]] == [(predicted, "ana", "sure"), (other, "ben", None)]
    root = Path(app.service.settings.feedback_uri) / "dataset"
    assert [p.relative_to(root).as_posix() for p in root.rglob("*.jpg")] == [f"{other}/{body['photo']['sha256']}.jpg"]


def test_unknown_labels_and_over_long_fields_are_422(app):
    prediction_id = app.predict(photo(6)).json()["id"]
    unknown = app.validate(prediction_id, "bird")
    assert unknown.status_code == 422 and "unknown label 'bird'" in unknown.json()["detail"]
    assert app.validate(prediction_id, "cat", note="x" * 5000).status_code == 422
    assert app.get(f"/api/predictions/{prediction_id}").json()["validations"] == []


def test_list_filters_and_the_review_queue(app):
    ids = [app.predict(photo(seed)).json() for seed in (10, 11, 12)]
    first, second = ids[0], ids[1]
    app.validate(first["id"], first["predicted_class"])
    app.validate(second["id"], "dog" if second["predicted_class"] == "cat" else "cat")
    listed = lambda **params: [p["id"] for p in app.get("/api/predictions", params=params).json()["predictions"]]  # noqa: E731
    assert listed(status="confirmed") == [first["id"]]
    assert listed(status="corrected") == [second["id"]]
    assert listed(status="unvalidated") == [ids[2]["id"]]
    assert listed() == [p["id"] for p in reversed(ids)]
    assert listed(model_version=first["model_version"]) == listed()
    assert listed(model_version="no-such-version") == []
    queue = app.get("/api/review-queue").json()
    assert queue["length"] == 1 and [p["id"] for p in queue["predictions"]] == [ids[2]["id"]]


def test_upload_data_files_with_labels(app):
    response = app.post("/api/upload-data", files=[("files[]", ("a.jpg", photo(20))), ("files[]", ("b.jpg", photo(21))),
                                                   ("files[]", ("bad.jpg", b"junk"))],
                        data={"labels[]": ["cat", "dog", "cat"], "by": "importer"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(a["name"], a["label"], a["outcome"]) for a in body["added"]] == [("a.jpg", "cat", "added"), ("b.jpg", "dog", "added")]
    assert [r["name"] for r in body["rejected"]] == ["bad.jpg"]
    files = app.service.photos.dataset_files()
    assert [len(files["cat"]), len(files["dog"])] == [1, 1]
    assert all(name.split(".")[0] in {a["sha256"] for a in body["added"]} for name in files["cat"] + files["dog"])


def test_a_damaged_zip_is_422_not_500(app):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("cat/a.png", image_bytes("PNG", (64, 64)))
        archive.writestr("dog/b.jpg", photo(50))
    data = bytearray(buffer.getvalue())
    first = zipfile.ZipFile(io.BytesIO(bytes(data))).infolist()[0]
    start = first.header_offset + 30 + len(first.filename)  # its deflated data, after the local header
    for i in range(start, start + 16):
        data[i] ^= 0xFF  # zlib: "invalid block type"
    response = app.post("/api/upload-data", files={"archive": ("bad.zip", bytes(data), "application/zip")})
    assert response.status_code == 200, response.text
    assert [r["name"] for r in response.json()["rejected"]] == ["cat/a.png"]
    assert [a["name"] for a in response.json()["added"]] == ["dog/b.jpg"]
    directory_broken = bytes(data[:-30]) + b"\x00" * 30  # the end of the central directory overwritten
    broken = app.post("/api/upload-data", files={"archive": ("bad.zip", directory_broken, "application/zip")})
    assert broken.status_code == 422 and "zip" in broken.json()["detail"]


def test_upload_data_zip_and_bad_requests(app):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photos/cats/1.jpg", photo(30))
        archive.writestr("photos/dogs/2.jpg", photo(31))
        archive.writestr("../../evil/cat/3.jpg", photo(32))
        archive.writestr("photos/notes.txt", b"hello")
    response = app.post("/api/upload-data", files={"archive": ("set.zip", buffer.getvalue(), "application/zip")})
    assert response.status_code == 200, response.text
    assert sorted(a["label"] for a in response.json()["added"]) == ["cat", "cat", "dog"]
    assert [r["name"] for r in response.json()["rejected"]] == ["photos/notes.txt"]
    root = Path(app.service.settings.feedback_uri)
    assert not (root.parent / "evil").exists() and not any(root.parent.rglob("3.jpg"))
    unknown = app.post("/api/upload-data", files={"files[]": ("a.jpg", photo(33))}, data={"labels[]": "bird"})
    assert unknown.status_code == 422 and "bird" in unknown.json()["detail"]
    missing = app.post("/api/upload-data", files={"files[]": ("a.jpg", photo(33))})
    assert missing.status_code == 422 and "labels[]" in missing.json()["detail"]
    mismatch = app.post("/api/upload-data", files=[("files[]", ("a.jpg", photo(33)))], data={"labels[]": ["cat", "dog"]})
    assert mismatch.status_code == 422
    assert app.post("/api/upload-data", files=[("labels[]", (None, "cat"))]).status_code == 400
    assert app.post("/api/upload-data", data={"labels[]": "cat"}).status_code == 415  # a plain form post
    assert app.post("/api/upload-data", json={}).status_code == 415
    assert app.get("/api/status").json()["counts"]["validated_photos"] == {"cat": 2, "dog": 1}


def test_status_health_ready(app):
    assert app.get("/health").json() == {"status": "ok"}
    assert app.get("/ready").status_code == 200
    status = app.get("/api/status").json()
    assert status["predictor"]["ready"] and status["predictor"]["class_names"] == ["cat", "dog"]
    assert status["database"] == {"reachable": True, "error": None, "schema_revision": "0005"}
    assert status["labels"] == ["cat", "dog"] and status["auth_required"] is False
    assert "sqlite" not in str(status)  # no database URL (it may hold a password) in the answer


def test_a_predictor_that_is_down_is_503_naming_it_and_nothing_is_stored(tmp_path):
    url = unused_url()
    with running_app(feedback_settings(tmp_path, url)) as down:
        response = down.predict(photo(1))
        assert response.status_code == 503 and url in response.json()["detail"]
        assert down.get("/ready").status_code == 503 and "predictor" in down.get("/ready").json()["problems"]
        status = down.get("/api/status").json()
        assert status["predictor"]["reachable"] is False and status["counts"]["photos"] == 0
        assert not (Path(down.service.settings.feedback_uri) / "photos").exists()
        page = down.get("/")
        assert page.status_code == 200 and "not reachable" in page.text and "make serve" in page.text


def test_a_slow_predictor_times_out_as_503(tmp_path):
    def slow(method, path, headers, body):
        time.sleep(3)
        return 200, {}, {"predictions": [{"label": "cat", "probabilities": {"cat": 1.0, "dog": 0.0}}]}

    with stub_server(slow) as url, running_app(feedback_settings(tmp_path, url, predictor_timeout_s=0.5)) as client:
        started = time.monotonic()
        response = client.predict(photo(1))
        assert response.status_code == 503 and "did not answer within 0.5 s" in response.json()["detail"]
        assert time.monotonic() - started < 2.5
        assert client.get("/api/status").json()["counts"]["predictions"] == 0


@pytest.mark.parametrize("answer, status", [
    ((200, {"predictions": [{"label": "cat"}]}), 502),  # no probabilities
    ((200, {"predictions": [{"label": "cat", "probabilities": [0.9, 0.1]}]}), 502),  # a list, not a mapping
    ((200, ["not", "an", "object"]), 502),
    ((200, {"predictions": [{"label": "bird", "probabilities": {"bird": 1.0}}]}), 502),  # a label the app does not know
    ((500, {"error": "boom"}), 502),
    ((400, {"error": "instances[0]: not an image we accept"}), 422),
    ((503, {"error": "model catdog is not ready"}), 503),
])
def test_predictor_answers_the_app_cannot_use(tmp_path, answer, status):
    code, payload = answer
    with stub_server(lambda *_: (code, {}, payload)) as url, running_app(feedback_settings(tmp_path, url)) as client:
        response = client.predict(photo(1))
        assert response.status_code == status, response.text
        assert client.get("/api/status").json()["counts"]["photos"] == 0


def test_no_champion_yet_the_page_says_how_to_train_one(tmp_path):
    def not_ready(method, path, headers, body):
        return 503, {}, {"error": "Model with name catdog is not ready."}

    with stub_server(not_ready) as url, running_app(feedback_settings(tmp_path, url)) as client:
        page = client.get("/")
        assert page.status_code == 200 and "No model is being served yet" in page.text
        assert "make run DATA=" in page.text
        assert client.get("/api/status").json()["predictor"]["reachable"] is True


def test_with_a_token_changing_data_needs_it_and_reading_stays_open(tmp_path, predictor):
    settings = feedback_settings(tmp_path, predictor.url, app_token="s3cret-token")
    with running_app(settings) as guarded:
        prediction = guarded.predict(photo(40)).json()  # predicting is open, as in the old API
        assert guarded.validate(prediction["id"], "cat").status_code == 401
        wrong = guarded.validate(prediction["id"], "cat", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        good = guarded.validate(prediction["id"], "cat", headers={"Authorization": "Bearer s3cret-token"})
        assert good.status_code == 201
        upload = guarded.post("/api/upload-data", files={"files[]": ("a.jpg", photo(41))}, data={"labels[]": "dog"})
        assert upload.status_code == 401
        assert guarded.get(f"/api/predictions/{prediction['id']}").status_code == 200
        assert guarded.get("/api/predictions").status_code == 200
        page = guarded.get("/review").text
        assert 'data-auth-required="true"' in page and "s3cret" not in page


def test_cross_origin_posts_are_refused(app):
    evil = {"Origin": "https://evil.example"}
    assert app.predict(photo(42), headers=evil).status_code == 403
    assert app.get("/api/status").json()["counts"]["photos"] == 0  # nothing stored for it
    prediction_id = app.predict(photo(42)).json()["id"]
    assert app.validate(prediction_id, "cat", headers=evil).status_code == 403
    assert app.post(f"/api/predictions/{prediction_id}/explanation", headers=evil).status_code == 403
    upload = app.post("/api/upload-data", files={"files[]": ("a.jpg", photo(43))}, data={"labels[]": "cat"},
                      headers=evil)
    assert upload.status_code == 403
    assert app.validate(prediction_id, "cat", headers={"Origin": app.url}).status_code == 201


def test_on_loopback_another_host_name_is_refused(app):
    """DNS rebinding: a page on evil.example whose name resolves to 127.0.0.1 sends Host: evil.example."""
    rebound = {"Host": "evil.example:8000", "Origin": "http://evil.example:8000"}
    assert app.predict(photo(44), headers=rebound).status_code == 400
    assert app.get("/api/predictions", headers={"Host": "evil.example"}).status_code == 400
    assert app.get("/health", headers={"Host": "localhost:8000"}).status_code == 200


def test_everything_rendered_is_escaped(app):
    name = '<img src=x onerror="alert(1)">.jpg'
    prediction = app.predict(photo(43), name=name).json()
    card = app.get(f"/cards/{prediction['id']}").text
    assert name not in card and "&lt;img src=x onerror=" in card
    history = app.get("/history").text
    assert name not in history and "&lt;img" in history


def test_pages_carry_a_same_origin_policy_and_load_nothing_from_elsewhere(app):
    app.predict(photo(44))
    for path in ("/", "/review", "/history", "/history?status=unvalidated"):
        page = app.get(path)
        assert page.status_code == 200
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "http://" not in page.text.split("<footer>")[0] and "https://" not in page.text
    docs = app.get("/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text
    assert app.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert "/api/predict" in app.get("/openapi.json").json()["paths"]


def test_predictions_and_verdicts_survive_an_app_restart(tmp_path, predictor):
    settings = feedback_settings(tmp_path, predictor.url)
    with running_app(settings) as first:
        body = first.predict(photo(50)).json()
        first.validate(body["id"], "dog", by="ana")
    with running_app(settings) as second:
        again = second.get(f"/api/predictions/{body['id']}").json()
        assert again["validated_label"] == "dog" and again["validations"][0]["by"] == "ana"
        assert again["probabilities"] == body["probabilities"]
