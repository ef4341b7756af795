"""Training photos in the app (feedback/labelling/training_photos.py) on SQLite, PostgreSQL and MariaDB:
the champion's suspects are imported into the queue (idempotently, and again when the champion
changes), a verdict is a validation that becomes a label override (never a dataset file), the
publisher writes <FEEDBACK_URI>/label-overrides.json, a run records the overrides it took in, and
the review order training_suspects_first puts them first."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from catdog import storage
from catdog.registry import ModelRegistry
from catdog.suspects import record_suspects
from feedback.retraining.config import parse_training_words
from feedback.store import queries, training_queries
from feedback.store.tables import RunValidation, TrainingPhoto
from tests.feedback_fixtures import FakePredictor, database_url, photo, started_service  # noqa: F401 (fixture)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(data: bytes, given: str, p_given: float, reasons=("label",), duplicates=(), origin="data") -> dict:
    other = "dog" if given == "cat" else "cat"
    return {"rank": 1, "sha256": sha(data), "split": "train", "origin": origin, "source": f"{given}/{sha(data)[:8]}.jpg",
            "file": f"images/{given}/{sha(data)[:24]}.jpg", "given_label": given,
            "probabilities": {given: p_given, other: round(1 - p_given, 4)}, "label_quality": p_given,
            "outlier_score": 0.5, "reasons": list(reasons), "duplicates": list(duplicates)}


def champion_with_suspects(registry_root: Path, version: int, run_id: str, photos: list[tuple[bytes, dict]]) -> str:
    """A registry whose champion alias names suspects (as select-champion writes them)."""
    registry = ModelRegistry(registry_root)
    ingest_dir = registry_root.parent / f"ingest-{version}"
    for data, e in photos:
        (ingest_dir / e["file"]).parent.mkdir(parents=True, exist_ok=True)
        (ingest_dir / e["file"]).write_bytes(data)
    uri = record_suspects(registry, version, [e for _, e in photos], ingest_dir, run_id, ["cat", "dog"])
    storage.write_text(registry.alias_uri, json.dumps({"version": version, "run_id": run_id, "suspects_uri": uri}))
    return uri


@pytest.fixture
def registry(tmp_path) -> Path:
    return tmp_path / "registry"


@pytest.fixture
def make_service(tmp_path, database_url, registry):  # noqa: F811 (the fixture above)
    made = []

    def make(**changes):
        training = parse_training_words([f"REGISTRY={registry}"], str(tmp_path / "store"))
        service = started_service(tmp_path, database_url, training=training, **changes)
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()


A, B, C, D = photo(71), photo(72), photo(73), photo(74)


def test_the_champions_suspects_join_the_queue_once(make_service, registry):
    champion_with_suspects(registry, 1, "run-1", [
        (A, entry(A, "cat", 0.05)),
        (B, entry(B, "dog", 0.4, ("near-duplicate",), [{"sha256": sha(C), "similarity": 0.97, "label": "cat"}])),
        (C, entry(C, "cat", 0.7, ("near-duplicate",), [{"sha256": sha(B), "similarity": 0.97, "label": "dog"}])),
        (D, entry(D, "cat", 0.1, origin="feedback")),
    ])
    service = make_service()  # imports at start
    report = service.training_photos.last
    assert (report["champion_version"], report["run_id"], report["listed"], report["added"]) == (1, "run-1", 4, 3)
    assert [s["reason"] for s in report["skipped"]] == ["a feedback photo: its verdict is in the app already"]
    queue = service.review_queue(50).predictions
    assert {p.photo_sha256 for p in queue} == {sha(A), sha(B), sha(C)}
    card = next(p for p in queue if p.photo_sha256 == sha(A))
    assert (card.source, card.label, card.confidence, card.model_version) == ("training", "cat", 0.05, None)
    assert card.training.reasons == ["label"] and card.training.flagged_by_run == "run-1"
    assert service.photos.read(card.photo.uri) == A  # copied into the app's photo store, like an upload
    pair = next(p for p in queue if p.photo_sha256 == sha(B)).training.details["duplicates"]
    partner = next(p for p in queue if p.photo_sha256 == sha(C))
    assert pair == [{"sha256": sha(C), "similarity": 0.97, "label": "cat", "prediction_id": partner.id}]
    # idempotent: again by hand, and a restarted app, add nothing
    again = service.training_photos.import_champion()
    assert (again["added"], again["already"]) == (0, 3)
    assert make_service().training_photos.last["added"] == 0
    assert service.queue_length() == 3


def test_a_verdict_is_an_override_never_a_dataset_file(make_service, registry, tmp_path):
    champion_with_suspects(registry, 1, "run-1", [(A, entry(A, "cat", 0.05)), (B, entry(B, "dog", 0.2))])
    service = make_service()
    cards = {p.photo_sha256: p for p in service.review_queue(50).predictions}
    service.validate(cards[sha(A)].id, "dog", by="ana")
    service.validate(cards[sha(B)].id, "neither", by="ben")
    service.publisher.flush_manifest(always=True)
    store = tmp_path / "store"
    assert not list((store / "dataset").rglob(f"{sha(A)}*")) and not list((store / "dataset").rglob(f"{sha(B)}*"))
    assert service.photos.read_manifest() == []
    overrides = json.loads((store / "label-overrides.json").read_text())["overrides"]
    assert [(o["sha256"], o["given_label"], o["label"], o["flagged_by_run"]) for o in overrides] == sorted(
        [(sha(A), "cat", "dog", "run-1"), (sha(B), "dog", "neither", "run-1")])
    by_sha = {o["sha256"]: o for o in overrides}
    assert [r["by"] for r in by_sha[sha(A)]["reviewers"]] == ["ana"] and by_sha[sha(A)]["updated_at"]
    assert by_sha[sha(A)]["source"] == f"cat/{sha(A)[:8]}.jpg"
    with service.db.read() as session:  # stored as validations: who and when
        [verdict] = queries.validations_of(session, sha(A))
        assert (verdict.label, verdict.by_name) == ("dog", "ana")
        assert queries.unpublished(session) == []  # repair never copies them either
    # a run records the overrides it took in (and no run_validations for them)
    run = service.runs.start_run  # the launcher is never reached: record inside the transaction
    from feedback.store.tables import TrainingRun, utcnow

    with service.db.writing() as session:
        session.add(TrainingRun(id="r1", created_at=utcnow(), target="local", trigger="manual", state="failed",
                                parameters={}, validation_cutoff_id=0, validated_photos=0, new_validated_photos=0))
        session.flush()
        assert training_queries.record_run_overrides(session, "r1") == 2
    with service.db.read() as session:
        assert {(o.photo_sha256, o.label) for o in training_queries.run_overrides(session, "r1")} == {
            (sha(A), "dog"), (sha(B), "neither")}
        from feedback.retraining.runs import latest_validation_ids

        assert latest_validation_ids(session, 10**9) == []
    assert service.runs.override_count("r1") == 2 and service.runs.override_count("no-such-run") == 0
    assert run  # (the service's start_run records them the same way: test_runs covers the launch)


def test_a_new_champion_brings_its_suspects(make_service, registry):
    champion_with_suspects(registry, 1, "run-1", [(A, entry(A, "cat", 0.05))])
    service = make_service()
    assert service.training_photos.sync() is None  # unchanged: nothing read beyond the alias
    champion_with_suspects(registry, 2, "run-2", [(A, entry(A, "cat", 0.05)), (B, entry(B, "dog", 0.3))])
    report = service.training_photos.sync()
    assert (report["champion_version"], report["added"], report["already"]) == (2, 1, 1)
    with service.db.read() as session:
        assert session.get(TrainingPhoto, sha(A)).flagged_by_run == "run-1"  # the first run that flagged it
        assert session.get(TrainingPhoto, sha(B)).flagged_by_run == "run-2"


def test_in_the_background_the_import_leaves_the_start_and_reads_the_alias_once_a_round(
        make_service, registry, monkeypatch):
    """start(background=True) returns before importing (a long list on gs:// must not hold up the
    app's start): the watcher's first round imports at once. sync() reads the alias once."""
    import threading

    from feedback.labelling import training_photos

    champion_with_suspects(registry, 1, "run-1", [(A, entry(A, "cat", 0.05))])
    service = make_service()
    service.training_photos.close()
    release, reads = threading.Event(), []
    real = training_photos.suspects_of_champion

    def slow_read(uri):
        reads.append(uri)
        release.wait(10)  # a slow registry
        return real(uri)

    monkeypatch.setattr(training_photos, "suspects_of_champion", slow_read)
    watcher = training_photos.TrainingPhotos(service.db, service.photos, str(registry), service.check,
                                             service.labels, interval_s=60)
    watcher.start(background=True)  # returns while the registry is still being read
    assert watcher.last is None
    release.set()
    for _ in range(200):
        if watcher.last is not None:
            break
        threading.Event().wait(0.05)
    watcher.close()
    assert (watcher.last["champion_version"], watcher.last["already"]) == (1, 1)  # imported at start already
    assert reads == [str(registry)]  # one read of the alias for the round


def test_no_champion_or_no_suspects_is_said(make_service, registry):
    service = make_service()
    assert service.training_photos.last["note"] == "no champion in the registry yet"
    storage.write_text(str(registry / "champion.json"), json.dumps({"version": 1}))
    assert "recorded no suspects" in service.training_photos.import_champion()["note"]


def test_training_suspects_first(make_service, registry):
    service = make_service()
    fake: FakePredictor = service.predictor
    fake.answer(photo(80), {"cat": 0.51, "dog": 0.49})
    upload = service.predict(photo(80)).id
    champion_with_suspects(registry, 1, "run-1", [(A, entry(A, "cat", 0.9)), (B, entry(B, "dog", 0.6))])
    service.training_photos.import_champion()
    order = [p.photo_sha256 for p in service.review_queue(50, "training_suspects_first").predictions]
    assert order == [sha(B), sha(A), sha(photo(80))]
    assert service.review_queue(50, "least_confident").predictions[0].id == upload


def test_the_import_route_is_a_guarded_write(tmp_path, registry):
    from feedback.web.app import create_app

    champion_with_suspects(registry, 1, "run-1", [(A, entry(A, "cat", 0.05))])
    training = parse_training_words([f"REGISTRY={registry}"], str(tmp_path / "store"))
    service = started_service(tmp_path, f"sqlite:///{tmp_path}/db/feedback.db", training=training,
                              app_token="s3cret-token")
    try:
        with TestClient(create_app(service), base_url="http://127.0.0.1") as client:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer s3cret\x00"}):
                answer = client.post("/api/training-photos/import", headers=headers)
                assert answer.status_code == 401 and answer.headers["content-type"] == "application/json", answer.text
            auth = {"Authorization": "Bearer s3cret-token"}
            answer = client.post("/api/training-photos/import", headers=auth)
            assert answer.status_code == 200 and answer.json()["already"] == 1
            assert client.get("/api/training-photos/import").json()["already"] == 1
            nul = client.post("/api/training-photos/import?x=%00", headers=auth)  # NUL bytes: refused, JSON
            assert nul.status_code == 422 and nul.headers["content-type"] == "application/json", nul.text
            odd = client.post("/api/training-photos/import", headers={**auth, "Content-Type": "application/json"},
                              content=b"{not json")  # a body is not read: the import takes none
            assert odd.status_code == 200, odd.text
            assert client.put("/api/training-photos/import", headers=auth).status_code == 405
            storage.write_text(str(registry / "champion.json"), json.dumps({"version": 1, "suspects_uri": str(
                tmp_path / "missing" / "suspects.json")}))
            answer = client.post("/api/training-photos/import", headers=auth)
            assert answer.status_code == 503 and "FileNotFoundError" in answer.json()["detail"], answer.text
            queue = client.get("/api/review-queue?order=training_suspects_first").json()
            assert queue["order"] == "training_suspects_first" and queue["predictions"][0]["source"] == "training"
            training = queue["predictions"][0]["training"]
            assert (training["given_label"], training["reasons"], training["flagged_by_run"]) == ("cat", ["label"], "run-1")
            page = client.get("/review?order=training_suspects_first")
            assert page.status_code == 200 and "Training photo: its label may be wrong" in page.text
    finally:
        service.close()
    assert not list(Path(tmp_path / "store" / "dataset").rglob(f"{sha(A)}*"))
    assert RunValidation  # imported for the run checks above


def test_training_cards_are_no_model_answers_on_the_dashboard(make_service, registry):
    from feedback.store import dashboard_queries

    champion_with_suspects(registry, 1, "run-1", [(A, entry(A, "cat", 0.05))])
    service = make_service()
    [card] = service.review_queue(50).predictions
    service.validate(card.id, "dog", by="ana")
    with service.db.read() as session:
        assert dashboard_queries.judged_per_version(session) == []
        assert dashboard_queries.neither_counts(session) == []
        assert dashboard_queries.judged_confidences(session) == []
        assert dashboard_queries.predictions_per_day(session, 7) == []
