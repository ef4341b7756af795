"""Several reviewers in the app (issue 21, item 3) on SQLite, PostgreSQL and MariaDB: a photo's
label is the consensus of its reviewers' latest verdicts, a tie is unresolved and its dataset copy
removed; the second-opinion queue; the dashboard's agreement figures; "by" required with
APP_TOKEN; and migration 0006 from a 0004 database that holds verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text

from feedback.labelling.reviewers import NameRequired
from feedback.store import queries
from feedback.store.tables import Photo, Prediction
from tests.feedback_fixtures import SCHEMA_HEAD, FakePredictor, database_url, photo, started_service  # noqa: F401 (fixture)


@pytest.fixture
def service(tmp_path, database_url):  # noqa: F811 (the fixture above)
    service = started_service(tmp_path, database_url, predictor=FakePredictor())
    yield service
    service.close()


def _dataset_files(service, sha256: str) -> list[str]:
    return sorted(p.parent.name for p in (Path(service.settings.feedback_uri) / "dataset").rglob(f"{sha256}.*"))


def test_a_tie_is_unresolved_out_of_the_dataset_and_a_third_verdict_settles_it(service):
    prediction = service.predict(photo(1))  # the fake predictor: cat 0.6
    sha = prediction.photo_sha256
    assert service.validate(prediction.id, "cat", by="Ana").status == "confirmed"
    assert _dataset_files(service, sha) == ["cat"]
    tied = service.validate(prediction.id, "dog", by="ben")
    assert (tied.status, tied.photo.label, tied.photo.reviewers, tied.photo.contested) == ("unresolved", None, 2, True)
    assert _dataset_files(service, sha) == []  # not used for training: the published copy is removed
    assert [p.id for p in service.list_predictions("unresolved")] == [prediction.id]
    assert service.list_predictions("unvalidated") == [] and service.list_predictions("corrected") == []
    service.publisher.flush_manifest(always=True)
    manifest = json.loads((Path(service.settings.feedback_uri) / "dataset" / "manifest.json").read_text())
    assert sha not in {entry["sha256"] for entry in manifest["photos"]}
    with service.db.read() as session:
        assert queries.queue_length(session) == 0  # judged: not back in the review queue
        assert queries.counts(session)["unresolved"] == 1 and queries.unpublished(session) == []
    # Ana changes her mind to dog: her one vote; then a third person: 2 dogs to 1 cat
    assert service.validate(prediction.id, "dog", by=" ANA ").photo.label == "dog"
    assert _dataset_files(service, sha) == ["dog"]
    settled = service.validate(prediction.id, "cat", by="cy")
    assert (settled.status, settled.photo.label, settled.photo.reviewers) == ("corrected", "dog", 3)


def test_unnamed_verdicts_behave_as_one_person_and_neither_is_a_vote(service):
    prediction = service.predict(photo(2))
    service.validate(prediction.id, "cat")
    latest = service.validate(prediction.id, "neither")  # the same (anonymous) person: latest wins
    assert (latest.status, latest.photo.reviewers, latest.photo.contested) == ("neither", 1, False)
    assert service.validate(prediction.id, "cat", by="ana").status == "unresolved"  # neither 1 : cat 1
    assert service.validate(prediction.id, "neither", by="ben").status == "neither"


def test_the_second_opinion_queue_and_its_order(service):
    fake: FakePredictor = service.predictor
    made = {}
    for seed, p in {10: 0.95, 11: 0.55, 12: 0.7, 13: 0.65, 14: 0.9, 15: 0.6}.items():
        fake.answer(photo(seed), {"cat": p, "dog": 1 - p})
        made[seed] = service.predict(photo(seed)).id
    service.validate(made[10], "cat", by="ana")                                   # confident, one reviewer: no
    service.validate(made[11], "cat", by="ana")                                   # unsure, one reviewer
    service.validate(made[12], "cat", by="ana"), service.validate(made[12], "dog", by="ben")  # a tie
    for who, label in (("ana", "cat"), ("ben", "dog"), ("cy", "cat")):          # contested, majority cat
        service.validate(made[14], label, by=who)
    service.validate(made[13], "cat", by="ben")                                   # unsure, judged by ben only
    # 15: nobody judged it: the review queue's, not this one's
    page = service.second_opinion(50, "dee")
    assert [p.id for p in page.predictions] == [made[12], made[14], made[11], made[13]] and page.length == 4
    assert page.order == "second_opinion"
    assert [p.id for p in service.second_opinion(50, "ANA").predictions] == [made[13]]  # her own left out
    assert [p.id for p in service.second_opinion(1, "dee").predictions] == [made[12]]
    assert service.second_opinion(50, None).length == 4  # "anonymous" judged none of them
    assert [p.id for p in service.review_queue(50).predictions] == [made[15]]


def test_the_dashboard_reports_agreement(service):
    made = [service.predict(photo(20 + i)).id for i in range(5)]
    for i, prediction_id in enumerate(made):
        service.validate(prediction_id, "cat", by="ana")
        service.validate(prediction_id, "cat" if i < 4 else "dog", by="ben")
    figures = service.dashboard()["agreement"]
    assert (figures["shared_photos"], figures["pairs"], figures["contested"], figures["unresolved"]) == (5, 5, 1, 1)
    assert figures["percent_agreement"] == pytest.approx(0.8)
    # coincidences: cat-cat 8, cat-dog 1, dog-cat 1; n = 10 (cat 9, dog 1): 1 - (2/10) / (18/90) = 0
    assert figures["alpha"] == pytest.approx(0.0) and figures["alpha_note"] is None
    assert {(r["reviewer"], r["judged"], r["compared"], r["agreement"]) for r in figures["reviewers"]} == {
        ("ana", 5, 4, 1.0), ("ben", 5, 4, 1.0)}


def test_a_run_takes_in_no_tied_photo(service):
    from feedback.retraining.runs import latest_validation_ids

    tied, agreed = service.predict(photo(30)), service.predict(photo(31))
    service.validate(tied.id, "cat", by="ana"), service.validate(tied.id, "dog", by="ben")
    service.validate(agreed.id, "dog", by="ana"), service.validate(agreed.id, "cat", by="ben")
    service.validate(agreed.id, "cat", by="cy")
    with service.db.read() as session:
        taken = latest_validation_ids(session, queries.latest_validation_id(session))
        rows = [queries.validations_of(session, agreed.photo_sha256)[-1].id]
    assert taken == rows  # the latest verdict that agrees with the consensus; the tied photo not at all


def test_0006_recomputes_the_labels_of_a_0004_database_that_holds_verdicts(database_url):  # noqa: F811
    from datetime import datetime

    from alembic import command
    from sqlalchemy import JSON, DateTime, bindparam

    from feedback.store.db import alembic_config, migrate, open_database

    database = open_database(database_url)
    at = datetime(2026, 1, 2, 3, 4, 5)
    photos = {"a": "dog", "b": "cat", "c": "neither", "d": None}  # the label 0004 held: the latest verdict
    verdicts = [("a", "Ana", "cat"), ("a", "ben", "dog"),                       # a tie: unresolved
                ("b", None, "dog"), ("b", "", "cat"),                            # anonymous twice: cat
                ("c", "ana", "cat"), ("c", "ben", "neither"), ("c", "cy", "neither"),  # majority neither
                ]
    try:
        with database.writing() as session:
            command.upgrade(alembic_config(session.connection()), "0004")
            for key, label in photos.items():
                session.execute(text("INSERT INTO photos (sha256, format, width, height, size_bytes, uri, created_at, "
                                     "label, published_label) VALUES (:sha, 'JPEG', 64, 48, 100, 'x.jpg', :at, :label, "
                                     ":label)").bindparams(bindparam("at", type_=DateTime())),
                                {"sha": key * 64, "at": at, "label": label})
                session.execute(text("INSERT INTO predictions (id, created_at, photo_sha256, model_name, label, "
                                     "confidence, probabilities, latency_ms, source) VALUES (:id, :at, :sha, 'catdog', "
                                     "'cat', 0.6, :probabilities, 12.0, 'api')")
                                .bindparams(bindparam("at", type_=DateTime()), bindparam("probabilities", type_=JSON())),
                                {"id": key, "sha": key * 64, "at": at, "probabilities": {"cat": 0.6, "dog": 0.4}})
            for key, by, label in verdicts:
                session.execute(text("INSERT INTO validations (photo_sha256, prediction_id, label, created_at, by_name, "
                                     "source) VALUES (:sha, :id, :label, :at, :by, 'api')")
                                .bindparams(bindparam("at", type_=DateTime())),
                                {"sha": key * 64, "id": key, "label": label, "at": at, "by": by})
        assert migrate(database) == SCHEMA_HEAD
        with database.read() as session:
            got = {k: (p.label, p.reviewers, p.contested) for k in photos for p in [session.get(Photo, k * 64)]}
            assert got == {"a": (None, 2, True), "b": ("cat", 1, False), "c": ("neither", 3, True), "d": (None, 0, False)}
            assert [v.reviewer for v in queries.validations_of(session, "b" * 64)] == ["anonymous", "anonymous"]
            assert [v.reviewer for v in queries.validations_of(session, "a" * 64)] == ["ana", "ben"]
            assert session.get(Prediction, "a").status == "unresolved" and session.get(Prediction, "d").status == "unvalidated"
            assert queries.unpublished(session) == ["a" * 64]  # its dog copy: removed by the app's repair
        with database.writing() as session:
            queries.add_validation(session, "a" * 64, "cat", "api", by="cy")  # the app goes on from there
        with database.read() as session:
            assert session.get(Photo, "a" * 64).label == "cat"
        with database.writing() as session:
            command.downgrade(alembic_config(session.connection()), "0004")
        assert "reviewers" not in {c["name"] for c in inspect(database.engine).get_columns("photos")}
        with database.read() as session:  # the old rule again: the latest verdict
            labels = dict(session.execute(text("SELECT sha256, label FROM photos")).all())
            assert {k: labels[k * 64] for k in photos} == {"a": "cat", "b": "cat", "c": "neither", "d": None}
        assert migrate(database) == SCHEMA_HEAD
    finally:
        database.close()


# -- the API ----------------------------------------------------------------------------------------
TOKEN = "reviewers-token-1"


@pytest.fixture
def token_client(tmp_path):
    from feedback.web.app import create_app

    service = started_service(tmp_path, f"sqlite:///{tmp_path}/db/feedback.db", predictor=FakePredictor(),
                              app_token=TOKEN)
    with TestClient(create_app(service), base_url="http://127.0.0.1") as client:
        client.service = service
        yield client
    service.close()


def test_with_app_token_by_is_required_on_verdicts_and_upload_data(token_client):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    prediction = token_client.service.predict(photo(40))
    route = f"/api/predictions/{prediction.id}/validation"
    for body in ({"label": "cat"}, {"label": "cat", "by": ""}, {"label": "cat", "by": "   "}):
        answer = token_client.post(route, json=body, headers=auth)
        assert answer.status_code == 422 and "'by'" in answer.json()["detail"] and "APP_TOKEN" in answer.json()["detail"]
    answer = token_client.post("/api/upload-data", files={"files[]": ("a.jpg", photo(41), "image/jpeg")},
                               data={"labels[]": "cat"}, headers=auth)
    assert answer.status_code == 422 and "'by' (who gives this verdict) is required" in answer.json()["detail"]
    with token_client.service.db.read() as session:
        assert queries.validations_of(session, prediction.photo_sha256) == []
    answer = token_client.post(route, json={"label": "cat", "by": " Ana "}, headers=auth)
    assert answer.status_code == 201 and answer.json()["validations"][0]["by"] == "Ana"
    answer = token_client.post("/api/upload-data", files={"files[]": ("a.jpg", photo(41), "image/jpeg")},
                               data={"labels[]": "cat", "by": "ana"}, headers=auth)
    assert answer.status_code == 200, answer.text
    assert token_client.post(route, json={"label": "dog", "by": "ben"}).status_code == 401  # the token still first


def test_upload_data_counts_each_persons_vote(token_client):
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def upload(label: str, by: str) -> dict:
        answer = token_client.post("/api/upload-data", files={"files[]": ("p.jpg", photo(45), "image/jpeg")},
                                   data={"labels[]": label, "by": by}, headers=auth)
        assert answer.status_code == 200, answer.text
        return answer.json()["added"][0]

    assert upload("cat", "ana")["outcome"] == "added"
    assert upload("cat", "Ana")["outcome"] == "already in the dataset"  # her vote again: no new verdict
    assert upload("dog", "ben")["outcome"] == "unresolved: its reviewers tie, so it is not in the dataset"
    assert upload("dog", "cy")["outcome"] == "added"  # the tie broken: two dogs to one cat
    assert upload("dog", "cy")["outcome"] == "already in the dataset"
    assert upload("neither", "dee")["outcome"] == "counted, but the majority of its reviewers says dog"
    with token_client.service.db.read() as session:
        sha = session.scalar(text("SELECT sha256 FROM photos"))
        assert [(v.reviewer, v.label) for v in queries.validations_of(session, sha)] == [
            ("ana", "cat"), ("ben", "dog"), ("cy", "dog"), ("dee", "neither")]


@pytest.mark.parametrize("query, words", [
    ({"queue": "second-opinion", "by": "x" * 101}, "at most 100 characters"),
    ({"queue": "second-opinion", "by": "ana\x00"}, "NUL"),
    ({"queue": "second-opinion", "order": "random"}, "leave out order and seed"),
    ({"queue": "third-opinion"}, "'review' or 'second-opinion'"),
])
def test_second_opinion_probes_are_json_4xx(token_client, query, words):
    answer = token_client.get("/api/review-queue", params=query)
    assert answer.status_code == 422 and words in json.dumps(answer.json())


def test_verdict_probes_are_json_4xx(token_client):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    prediction_id = token_client.service.predict(photo(42)).id
    route = f"/api/predictions/{prediction_id}/validation"
    for body, status in (({"label": "cat", "by": "x" * 10_000}, 422), ({"label": "cat", "by": "a\x00b"}, 422),
                         ({"label": "cat\x00", "by": "ana"}, 422)):
        answer = token_client.post(route, json=body, headers=auth)
        assert answer.status_code == status and answer.headers["content-type"] == "application/json", answer.text
    answer = token_client.post("/api/upload-data", files={"files[]": ("a.jpg", photo(43), "image/jpeg")},
                               data={"labels[]": "cat", "by": "a\x00b"}, headers=auth)
    assert answer.status_code == 422 and "NUL" in answer.json()["detail"]


def test_the_second_opinion_api(token_client):
    service = token_client.service
    auth = {"Authorization": f"Bearer {TOKEN}"}
    prediction_id = service.predict(photo(44)).id  # cat 0.6: below SECOND_OPINION_CONFIDENCE (0.8)
    assert token_client.post(f"/api/predictions/{prediction_id}/validation", json={"label": "cat", "by": "ana"},
                             headers=auth).status_code == 201
    answer = token_client.get("/api/review-queue", params={"queue": "second-opinion", "by": "Ben"}).json()
    assert (answer["queue"], answer["order"], answer["length"]) == ("second-opinion", "second_opinion", 1)
    assert [p["id"] for p in answer["predictions"]] == [prediction_id]
    assert token_client.get("/api/review-queue", params={"queue": "second-opinion", "by": "ana"}).json()["length"] == 0
    assert token_client.get("/api/review-queue").json()["queue"] == "review"
