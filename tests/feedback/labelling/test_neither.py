"""Issue 18's "neither" in the feedback app: the predictor's out-of-distribution score and flag
(read from KServe V1 and Vertex answers, absent for older models, strict on type when present),
stored with the prediction and answered by the API; the verdict "neither" on the validation and
upload routes, its own history status and filters; and that such a photo never stays in the
feedback dataset (files and manifest), repair included."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from feedback.predictor_client.client import PredictorClient, PredictorError
from tests.feedback_fixtures import FakePredictor, feedback_settings, photo, running_app, stub_server

OOD = {"method": "energy", "threshold": 5.0}
V1_PREDICTION = {"label": "dog", "probabilities": {"cat": 0.07, "dog": 0.93}}


def kserve_stand_in(prediction: dict, parameters: dict | None = None):
    """A KServe predictor answering every :predict with `prediction` and its V2 metadata with `parameters`."""

    def handler(method, path, headers, body):
        if path.endswith(":predict"):
            return 200, {"x-model-version": "3"}, {"predictions": [prediction]}
        if path.endswith("/ready"):
            return 200, {}, {"ready": True}
        return 200, {}, {"name": "catdog", "versions": ["3"],
                         "parameters": {"model_version": "3", "class_names": ["cat", "dog"], **(parameters or {})}}

    return handler


# -- the predictor client ---------------------------------------------------------------------------
@pytest.mark.parametrize("extra, expected", [
    ({"ood_score": 7.25, "neither": True}, (7.25, True)),
    ({"ood_score": -3, "neither": False}, (-3.0, False)),
    ({}, (None, None)),  # a model exported before the score: still served
    ({"ood_score": None, "neither": None}, (None, None)),
])
def test_v1_answers_with_and_without_the_ood_fields(tmp_path, extra, expected):
    with stub_server(kserve_stand_in({**V1_PREDICTION, **extra})) as url:
        client = PredictorClient(feedback_settings(tmp_path, url))
        answer = client.predict(photo(1))
        client.close()
    assert (answer.label, answer.probabilities) == ("dog", {"cat": 0.07, "dog": 0.93})
    assert (answer.ood_score, answer.neither) == expected
    assert isinstance(answer.ood_score, (float, type(None)))


@pytest.mark.parametrize("extra, words", [
    ({"ood_score": "7.2"}, "ood_score '7.2' is not a finite number"),
    ({"ood_score": True}, "ood_score True"),
    ({"ood_score": 1e400}, "not a finite number"),  # JSON's 1e400 reads as inf
    ({"neither": 1}, "neither 1 is not true or false"),
    ({"neither": "true"}, "neither 'true'"),
])
def test_ood_fields_of_another_type_are_a_bad_answer(tmp_path, extra, words):
    prediction = {**V1_PREDICTION, **extra}
    with stub_server(lambda *args: (200, {}, json.dumps({"predictions": [prediction]}).replace("Infinity", "1e400")
                                    .encode())) as url:
        client = PredictorClient(feedback_settings(tmp_path, url))
        with pytest.raises(PredictorError, match=words) as error:
            client.predict(photo(1))
        client.close()
    assert error.value.status == 502


def test_vertex_answers_carry_the_ood_fields(tmp_path):
    def vertex(method, path, headers, body):
        return 200, {}, {"predictions": [{**V1_PREDICTION, "ood_score": 6.5, "neither": True}], "modelVersionId": "7"}

    with stub_server(vertex) as url:
        settings = feedback_settings(tmp_path, url + "/v1/projects/p/locations/r/endpoints/1", predictor_protocol="vertex")
        client = PredictorClient(settings, token=lambda: "t")
        answer = client.predict(photo(1))
        client.close()
    assert (answer.ood_score, answer.neither, answer.model_version) == (6.5, True, "7")


def test_the_threshold_comes_from_the_predictors_metadata_and_round_trips(tmp_path):
    flagged = {**V1_PREDICTION, "ood_score": 7.25, "neither": True}
    with stub_server(kserve_stand_in(flagged, {"ood": OOD})) as url, \
            running_app(feedback_settings(tmp_path, url)) as app:
        assert app.service.predictor_status().ood == OOD
        body = app.predict(photo(1)).json()
        assert (body["ood_score"], body["neither"], body["ood_threshold"]) == (7.25, True, 5.0)
        stored = app.get(f"/api/predictions/{body['id']}").json()
        assert (stored["ood_score"], stored["neither"], stored["ood_threshold"]) == (7.25, True, 5.0)
        card = app.get(f"/cards/{body['id']}").text
    assert "This may be neither a cat nor a dog." in card and "7.25" in card and "(threshold 5)" in card


def test_an_old_model_answers_without_the_fields_and_its_card_has_no_warning(tmp_path):
    with stub_server(kserve_stand_in(V1_PREDICTION)) as url, running_app(feedback_settings(tmp_path, url)) as app:
        body = app.predict(photo(2)).json()
        card = app.get(f"/cards/{body['id']}").text
    assert (body["ood_score"], body["neither"], body["ood_threshold"]) == (None, None, None)
    assert "may be neither" not in card and 'data-testid="verdict-neither"' in card  # the verdict is always offered


# -- the verdict -------------------------------------------------------------------------------------
@pytest.fixture
def app(tmp_path):
    fake = FakePredictor("4", ood=OOD)
    with running_app(feedback_settings(tmp_path, "http://127.0.0.1:9"), predictor=fake) as client:
        client.fake = fake
        yield client


def dataset(app) -> dict[str, list[str]]:
    app.service.publisher.flush_manifest(always=True)
    return app.service.photos.dataset_files()


def manifest_shas(app) -> set[str]:
    return {entry["sha256"] for entry in app.service.photos.read_manifest()}


def test_neither_is_a_verdict_with_its_own_status_and_leaves_the_dataset(app):
    app.fake.flag(photo(1), 9.5)
    flagged = app.predict(photo(1)).json()
    plain = app.predict(photo(2)).json()
    assert (flagged["neither"], flagged["ood_score"], flagged["ood_threshold"]) == (True, 9.5, 5.0)
    assert (plain["neither"], plain["ood_score"]) == (False, 1.0)
    sha = flagged["photo"]["sha256"]

    assert app.validate(flagged["id"], "cat", by="Ann").status_code == 201  # first a person said cat: in the dataset
    assert any(name.startswith(sha) for name in dataset(app)["cat"]) and sha in manifest_shas(app)

    answer = app.validate(flagged["id"], " neither ", by="ann", note="a toaster")
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert (body["status"], body["validated_label"]) == ("neither", "neither")
    assert [v["label"] for v in body["validations"]] == ["cat", "neither"]
    files = dataset(app)
    assert not any(name.startswith(sha) for names in files.values() for name in names)
    assert sha not in manifest_shas(app)
    assert (Path(app.service.settings.feedback_uri) / "photos" / sha[:2]).is_dir()  # the original is kept

    listed = app.get("/api/predictions", params={"status": "neither"}).json()["predictions"]
    assert [p["id"] for p in listed] == [flagged["id"]]
    assert [p["id"] for p in app.get("/api/predictions", params={"flagged": "true"}).json()["predictions"]] == [flagged["id"]]
    assert [p["id"] for p in app.get("/api/predictions", params={"flagged": "false"}).json()["predictions"]] == [plain["id"]]
    assert app.get("/api/predictions", params={"status": "corrected"}).json()["predictions"] == []
    assert app.get("/api/predictions", params={"flagged": "maybe"}).status_code == 422
    counts = app.get("/api/status").json()["counts"]
    assert (counts["neither"], counts["corrected"], counts["unvalidated"], counts["unpublished"]) == (1, 0, 1, 0)
    assert counts["validated_photos"] == {"neither": 1}
    assert [p["id"] for p in app.get("/api/review-queue").json()["predictions"]] == [plain["id"]]

    history = app.get("/history", params={"status": "neither"}).text
    assert flagged["id"] in history and plain["id"] not in history and "Neither a cat nor a dog: kept out of the dataset" in history
    assert flagged["id"] in app.get("/history", params={"flagged": "true"}).text
    assert app.get("/history", params={"status": "bogus"}).status_code == 422

    back = app.validate(flagged["id"], "dog", by="ann")  # her later verdict of a label puts it back
    assert back.status_code == 201 and back.json()["status"] == "corrected"
    assert any(name.startswith(sha) for name in dataset(app)["dog"]) and sha in manifest_shas(app)


def test_an_unknown_label_names_neither_among_the_choices(app):
    prediction = app.predict(photo(3)).json()
    answer = app.validate(prediction["id"], "bird")
    assert answer.status_code == 422 and "['cat', 'dog', 'neither']" in answer.json()["detail"]


def test_upload_data_takes_neither_and_keeps_those_photos_out(app):
    response = app.post("/api/upload-data", files=[("files[]", ("a.jpg", photo(4))), ("files[]", ("b.jpg", photo(5)))],
                        data={"labels[]": ["neither", "cat"]})
    assert response.status_code == 200, response.text
    assert [(a["name"], a["outcome"]) for a in response.json()["added"]] == [
        ("a.jpg", "neither: not in the dataset"), ("b.jpg", "added")]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("neither/car.jpg", photo(6))
        archive.writestr("cats/c.jpg", photo(4))  # was neither: now a cat, into the dataset
    response = app.post("/api/upload-data", files={"archive": ("set.zip", buffer.getvalue())})
    assert response.status_code == 200, response.text
    assert [(a["name"], a["label"], a["outcome"]) for a in response.json()["added"]] == [
        ("neither/car.jpg", "neither", "neither: not in the dataset"), ("cats/c.jpg", "cat", "added")]
    files = dataset(app)
    assert len(files["cat"]) == 2 and files["dog"] == [] and len(manifest_shas(app)) == 2


def test_repair_finishes_an_interrupted_removal(app):
    from feedback.store import queries

    prediction = app.predict(photo(7)).json()
    sha = prediction["photo"]["sha256"]
    app.validate(prediction["id"], "dog")
    assert any(name.startswith(sha) for name in dataset(app)["dog"])
    with app.service.db.writing() as session:  # the verdict committed, then a crash before the files moved
        queries.add_validation(session, sha, "neither", "api")
    assert app.get("/api/status").json()["counts"]["unpublished"] == 1
    assert app.service.publisher.repair() == 1
    assert dataset(app)["dog"] == [] and sha not in manifest_shas(app)
    assert app.get("/api/status").json()["counts"]["unpublished"] == 0
    assert app.service.publisher.repair() == 0


def test_labels_may_not_hold_neither(tmp_path):
    from feedback.labelling.service import FeedbackService

    with pytest.raises(ValueError, match="LABELS may not hold 'neither'"):
        FeedbackService(feedback_settings(tmp_path, "http://127.0.0.1:9", labels=("cat", "dog", "neither")),
                        predictor=FakePredictor())
