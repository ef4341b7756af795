"""The feedback store on SQLite, PostgreSQL and MariaDB (real servers: tests/db_servers.py):
migrations, the rows a prediction and a verdict leave, history, filters, the queue, restarts."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, text

from feedback.store import queries
from feedback.store.db import SchemaError, migrate, open_database
from feedback.store.tables import Photo, Prediction, Validation, utcnow
from tests.feedback_fixtures import SCHEMA_HEAD, FakePredictor, store_at_revision, database_url, photo, started_service  # noqa: F401 (fixture)


@pytest.fixture
def service(tmp_path, database_url):  # noqa: F811 (the fixture above)
    service = started_service(tmp_path, database_url)
    yield service
    service.close()


def test_migrations_build_exactly_the_models(service):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from feedback.store.tables import Base

    with service.db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        assert context.get_current_revision() == service.schema_revision == SCHEMA_HEAD
    assert {"photos", "predictions", "validations"} <= set(inspect(service.db.engine).get_table_names())


def test_migrating_again_changes_nothing(service):
    assert migrate(service.db) == SCHEMA_HEAD


def test_a_newer_schema_than_the_code_knows_is_a_clear_error(service):
    with service.db.writing() as session:
        session.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    with pytest.raises(SchemaError, match=rf"0099_from_the_future.*newer than this code knows.*{SCHEMA_HEAD}"):
        migrate(service.db)


def test_sqlite_runs_in_wal_mode(tmp_path):
    database = open_database(f"sqlite:///{tmp_path}/a/b/feedback.db")  # folders are created
    with database.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    database.close()


def test_a_prediction_row_holds_what_the_issue_lists(service):
    data = photo(1)
    prediction = service.predict(data, original_name="kitty.jpg", explain=True, source="page")
    with service.db.read() as session:
        row = session.get(Prediction, prediction.id)
        assert (row.label, row.model_name, row.model_version, row.source) == ("cat", "catdog", "v1", "page")
        assert row.probabilities == {"cat": 0.6, "dog": 0.4} and row.confidence == pytest.approx(0.6)
        assert row.latency_ms == pytest.approx(12.0) and row.explanation["values"][0] == [0.1, 0.9]
        assert row.created_at.tzinfo is not None and (utcnow() - row.created_at).total_seconds() < 60
        photo_row = row.photo
        assert photo_row.sha256 == __import__("hashlib").sha256(data).hexdigest()
        assert (photo_row.format, photo_row.width, photo_row.height, photo_row.size_bytes) == ("JPEG", 64, 48, len(data))
        assert photo_row.uri.endswith(f"photos/{photo_row.sha256[:2]}/{photo_row.sha256}.jpg")
        assert photo_row.original_name == "kitty.jpg" and photo_row.label is None


def test_timestamps_keep_microseconds_and_utc(service):
    first = service.predict(photo(1))
    second = service.predict(photo(2))
    with service.db.read() as session:
        a, b = session.get(Prediction, first.id), session.get(Prediction, second.id)
    assert a.created_at < b.created_at and a.created_at.microsecond == first.created_at.microsecond
    assert a.created_at.utcoffset().total_seconds() == 0


def test_the_same_photo_twice_is_stored_once(service):
    data = photo(3)
    first, second = service.predict(data), service.predict(data)
    assert first.id != second.id and first.photo_sha256 == second.photo_sha256
    with service.db.read() as session:
        assert session.scalar(select(func.count()).select_from(Photo)) == 1
        assert session.scalar(select(func.count()).select_from(Prediction)) == 2
    stored = (Path(service.settings.feedback_uri) / "photos").rglob("*.jpg")
    assert [p.name for p in stored] == [f"{first.photo_sha256}.jpg"]


def test_a_correction_is_a_new_row_and_the_latest_wins(service):
    """A person's correction replaces their earlier verdict (the same name, whatever its case)."""
    prediction = service.predict(photo(4))  # the fake predictor says cat
    confirmed = service.validate(prediction.id, "cat", by="ana", note="my cat")
    assert confirmed.status == "confirmed"
    corrected = service.validate(prediction.id, "dog", by="Ana")
    assert corrected.status == "corrected" and corrected.photo.label == "dog"
    with service.db.read() as session:
        history = queries.validations_of(session, prediction.photo_sha256)
    assert [(v.label, v.by_name, v.note) for v in history] == [("cat", "ana", "my cat"), ("dog", "Ana", None)]
    assert history[0].created_at <= history[1].created_at
    files = service.photos.dataset_files()
    assert files == {"cat": [], "dog": [f"{prediction.photo_sha256}.jpg"]}


def test_status_and_model_version_filters(service):
    service.predictor.version = "v1"
    a, b, c = service.predict(photo(10)), service.predict(photo(11)), service.predict(photo(12))
    service.predictor.version = "v2"
    d = service.predict(photo(13))
    service.validate(a.id, "cat")  # confirmed
    service.validate(b.id, "dog")  # corrected
    with service.db.read() as session:
        ids = lambda **kw: {p.id for p in queries.list_predictions(session, **kw)}  # noqa: E731
        assert ids(status="confirmed") == {a.id}
        assert ids(status="corrected") == {b.id}
        assert ids(status="unvalidated") == {c.id, d.id}
        assert ids(model_version="v2") == {d.id}
        assert ids(status="unvalidated", model_version="v1") == {c.id}
        newest = [p.id for p in queries.list_predictions(session)]
        assert newest == [d.id, c.id, b.id, a.id]
        assert [p.id for p in queries.list_predictions(session, limit=2, offset=1)] == [c.id, b.id]
        assert queries.model_versions(session) == ["v1", "v2"]


def test_review_queue_is_least_confident_first_and_each_photo_once(service):
    fake: FakePredictor = service.predictor
    confidences = {20: 0.9, 21: 0.55, 22: 0.7, 23: 0.51}
    for seed, p in confidences.items():
        fake.answer(photo(seed), {"cat": p, "dog": 1 - p})
    made = {seed: service.predict(photo(seed)) for seed in confidences}
    again = service.predict(photo(21))  # the same photo once more: shown once, its newest prediction
    service.validate(made[23].id, "cat")  # validated: out of the queue
    with service.db.read() as session:
        queue = queries.review_queue(session)
        assert [p.id for p in queue] == [again.id, made[22].id, made[20].id]
        assert queries.queue_length(session) == 3
        counts = queries.counts(session)
    assert counts == {"predictions": 5, "unvalidated": 4, "confirmed": 1, "corrected": 0, "neither": 0, "unresolved": 0, "photos": 4,
                      "validated_photos": {"cat": 1}, "review_queue": 3, "unpublished": 0}


def test_predictions_and_verdicts_survive_a_restart(tmp_path, database_url, request):  # noqa: F811
    first = started_service(tmp_path, database_url)
    prediction = first.predict(photo(30), original_name="before.jpg")
    first.validate(prediction.id, "dog", by="ana")
    first.close()
    if not database_url.startswith("sqlite"):  # the database server itself restarts too
        request.getfixturevalue("postgres_server" if database_url.startswith("postgresql") else "mariadb_server").restart()
    second = started_service(tmp_path, database_url)
    try:
        again = second.get(prediction.id)
        assert (again.label, again.photo.label, again.status, again.photo.original_name) == ("cat", "dog", "corrected", "before.jpg")
        with second.db.read() as session:
            assert [v.by_name for v in queries.validations_of(session, again.photo_sha256)] == ["ana"]
    finally:
        second.close()


def test_a_verdict_on_a_missing_photo_row_cannot_be_written(service):
    from sqlalchemy.exc import NoResultFound

    with pytest.raises(NoResultFound), service.db.writing() as session:
        queries.add_validation(session, "0" * 64, "cat", "api")
    with service.db.read() as session:
        assert session.scalar(select(func.count()).select_from(Validation)) == 0


def test_replicas_starting_together_migrate_once(database_url):  # noqa: F811
    """Without the migration lock, racing CREATE TABLEs fail (PostgreSQL) or wait forever (MariaDB's
    metadata locks): daemon threads and a deadline keep a regression from hanging the suite."""
    import threading

    databases = [open_database(database_url) for _ in range(4)]
    results: list = [None] * len(databases)

    def run(i: int) -> None:
        try:
            results[i] = migrate(databases[i])
        except Exception as exc:  # reported below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(databases))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert results == [SCHEMA_HEAD] * len(databases)
        with databases[0].read() as session:
            assert session.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [SCHEMA_HEAD]
    finally:
        for database in databases:
            database.close()


def test_0003_adds_the_ood_columns_to_a_0002_database_that_holds_rows(database_url):  # noqa: F811
    """Issue 18: predictions of a store migrated from 0002 keep their rows with NULL ood fields; the
    new columns hold a flag as a bool; 0003 downgrades and upgrades again."""
    from alembic import command

    from feedback.store.db import alembic_config

    database = open_database(database_url)
    try:
        store_at_revision(database, "0002")
        assert "ood_score" not in {c["name"] for c in inspect(database.engine).get_columns("predictions")}
        assert migrate(database) == SCHEMA_HEAD
        with database.writing() as session:
            old = session.get(Prediction, "p1")
            assert (old.ood_score, old.neither, old.ood_threshold, old.status) == (None, None, None, "unvalidated")
            assert old.probabilities == {"cat": 0.6, "dog": 0.4}
            old.ood_score, old.neither, old.ood_threshold = 7.5, True, 5.0
        with database.read() as session:
            assert queries.list_predictions(session, flagged=True)[0].id == "p1"
            assert queries.list_predictions(session, flagged=False) == []
            row = session.get(Prediction, "p1")
            assert (row.ood_score, row.neither, row.ood_threshold) == (7.5, True, 5.0) and row.neither is True
        with database.writing() as session:
            command.downgrade(alembic_config(session.connection()), "0002")
        assert "neither" not in {c["name"] for c in inspect(database.engine).get_columns("predictions")}
        assert migrate(database) == SCHEMA_HEAD
        with database.read() as session:
            assert session.get(Prediction, "p1").neither is None
    finally:
        database.close()


def test_0007_adds_the_embedding_column_to_a_0004_database_that_holds_rows(database_url):  # noqa: F811
    """The diverse order's predictions.embedding: rows of a 0004 store keep NULL (the order puts them
    last), the column takes float32 bytes, and 0007 downgrades and upgrades again."""
    import numpy as np
    from alembic import command

    from feedback.store.db import alembic_config

    database = open_database(database_url)
    try:
        store_at_revision(database, "0004", ["p7"], "b" * 64, label="dog")
        assert "embedding" not in {c["name"] for c in inspect(database.engine).get_columns("predictions")}
        assert migrate(database) == SCHEMA_HEAD
        with database.writing() as session:
            row = session.get(Prediction, "p7")
            assert row.embedding is None and row.status == "unvalidated"
            row.embedding = np.arange(32, dtype="<f4").tobytes()
        with database.read() as session:
            assert np.frombuffer(session.get(Prediction, "p7").embedding, "<f4").tolist() == list(range(32))
            assert [p.id for p in queries.review_queue(session, 5, "diverse")] == ["p7"]
        with database.writing() as session:
            command.downgrade(alembic_config(session.connection()), "0004")
        assert "embedding" not in {c["name"] for c in inspect(database.engine).get_columns("predictions")}
        assert migrate(database) == SCHEMA_HEAD
        with database.read() as session:
            assert session.get(Prediction, "p7").embedding is None
    finally:
        database.close()


def test_0005_adds_the_training_tables_to_a_0004_database_that_holds_rows(database_url):  # noqa: F811
    """Issue 21: a store at 0004 with an upload and its verdict keeps them; 0005 adds training_photos and
    run_overrides (a training photo's card and its override can be stored); it downgrades and upgrades again."""
    from datetime import datetime

    from alembic import command
    from sqlalchemy import DateTime, bindparam

    from feedback.store import training_queries
    from feedback.store.db import alembic_config
    from feedback.store.tables import TrainingRun

    database = open_database(database_url)
    try:
        store_at_revision(database, "0004")
        with database.writing() as session:  # the upload's verdict, and the label 0004 kept with it
            session.execute(text("INSERT INTO validations (photo_sha256, prediction_id, label, created_at, source) "
                                 "VALUES (:sha, 'p1', 'cat', :at, 'api')").bindparams(bindparam("at", type_=DateTime())),
                            {"sha": "a" * 64, "at": datetime(2026, 1, 2, 3, 4, 6)})
            session.execute(text("UPDATE photos SET label = 'cat'"))
        assert "training_photos" not in inspect(database.engine).get_table_names()
        assert migrate(database) == SCHEMA_HEAD
        with database.writing() as session:
            assert session.get(Prediction, "p1").training is None and session.get(Prediction, "p1").status == "confirmed"
            photo = queries.lock_photo(session, "a" * 64)
            session.execute(text("INSERT INTO photos (sha256, format, width, height, size_bytes, uri, created_at) "
                                 "VALUES (:sha, 'JPEG', 64, 48, 100, 'y.jpg', :at)")
                            .bindparams(bindparam("at", type_=DateTime())), {"sha": "b" * 64, "at": datetime(2026, 1, 2)})
            photo = queries.lock_photo(session, "b" * 64)
            training_queries.add_training_photo(session, photo, {
                "sha256": "b" * 64, "source": "dog/1.jpg", "split": "train", "given_label": "dog",
                "probabilities": {"cat": 0.9, "dog": 0.1}, "reasons": ["label"], "duplicates": []}, "run-1", 1, "s.json")
            queries.add_validation(session, "b" * 64, "cat", "api", "ana")
            session.add(TrainingRun(id="r1", target="local", trigger="manual", state="failed", parameters={},
                                    validation_cutoff_id=0, validated_photos=0, new_validated_photos=0))
            session.flush()
            assert training_queries.record_run_overrides(session, "r1") == 1
        with database.read() as session:
            assert [(o.photo_sha256, o.label) for o in training_queries.run_overrides(session, "r1")] == [("b" * 64, "cat")]
            assert queries.unpublished(session) == ["a" * 64]  # the training photo's verdict is no dataset file
            assert [e["sha256"] for e in queries.manifest_entries(session)] == ["a" * 64]  # the upload only
        with database.writing() as session:
            session.execute(text("DELETE FROM run_overrides"))
            session.execute(text("DELETE FROM training_photos"))
            command.downgrade(alembic_config(session.connection()), "0004")
        assert "run_overrides" not in inspect(database.engine).get_table_names()
        assert migrate(database) == SCHEMA_HEAD
        with database.read() as session:
            assert session.get(Prediction, "p1").label == "cat"
    finally:
        database.close()
