"""16 clients uploading and validating at once lose nothing, on SQLite and PostgreSQL (and MariaDB):
every answer is 2xx, every row and file is there, and racing verdicts on one photo end on the latest."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from feedback.store import queries
from feedback.store.tables import Photo, Prediction, Validation
from tests.feedback_fixtures import DATABASES, feedback_settings, photo, predictor, running_app  # noqa: F401

CLIENTS = 16


@pytest.mark.parametrize("backend", DATABASES)
def test_sixteen_clients_at_once_lose_nothing(tmp_path, predictor, backend, request):  # noqa: F811
    url = f"sqlite:///{tmp_path}/store/feedback.db" if backend == "sqlite" else request.getfixturevalue(f"{backend}_db_url")
    shared = photo(999)

    with running_app(feedback_settings(tmp_path, predictor.url, database_url=url)) as app:
        def client(n: int) -> list[int]:
            codes = []
            own = [app.predict(photo(1000 + 2 * n + k), name=f"client{n}-{k}.jpg") for k in range(2)]
            codes += [r.status_code for r in own]
            first, second = (r.json() for r in own)
            codes.append(app.validate(first["id"], first["predicted_class"], by=f"c{n}").status_code)
            codes.append(app.validate(second["id"], "dog" if second["predicted_class"] == "cat" else "cat").status_code)
            common = app.predict(shared, name="shared.jpg")
            codes.append(common.status_code)
            codes.append(app.validate(common.json()["id"], "cat" if n < 9 else "dog", by=f"c{n}").status_code)
            return codes

        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(client, range(CLIENTS)))
        assert all(code in (200, 201) for codes in results for code in codes), results

        service = app.service
        with service.db.read() as session:
            assert session.scalar(select(func.count()).select_from(Prediction)) == 3 * CLIENTS
            assert session.scalar(select(func.count()).select_from(Validation)) == 3 * CLIENTS
            assert session.scalar(select(func.count()).select_from(Photo)) == 2 * CLIENTS + 1
            photos = {p.sha256: p for p in session.scalars(select(Photo))}
            shared_sha = next(p.sha256 for p in photos.values() if p.original_name == "shared.jpg")
            history = queries.validations_of(session, shared_sha)
            # 16 people, 9 cat and 7 dog, racing: the consensus written last counts every one of them
            assert len(history) == CLIENTS and (photos[shared_sha].label, photos[shared_sha].reviewers) == ("cat", CLIENTS)
            assert all(p.published_label == p.label for p in photos.values())
        dataset = service.photos.dataset_files()
        published = {(label, name.split(".")[0]) for label, names in dataset.items() for name in names}
        assert published == {(p.label, p.sha256) for p in photos.values()}  # each photo once, in its verdict's folder
        service.publisher.flush_manifest()  # the maintenance thread would within a second
        manifest = service.photos.read_manifest()
        assert sorted(e["sha256"] for e in manifest) == sorted(photos)
        stored = list((Path(service.settings.feedback_uri) / "photos").rglob("*.jpg"))
        assert len(stored) == 2 * CLIENTS + 1
        assert not list(Path(service.settings.feedback_uri).rglob(".*.tmp-*"))  # no temporary file left behind


@pytest.mark.parametrize("backend", DATABASES)
def test_a_replica_moving_a_photo_holds_off_another_replicas_verdict(tmp_path, backend, request, monkeypatch):
    """Two app processes (here: two services, each with its own engine) share the database and the
    photo store. Replica A is in the middle of moving a photo into cat/ when replica B records
    "dog" for it. B must wait for A's move to finish (the photo's row is locked across it), or A's
    late file move would leave the photo in cat/ with the database saying dog."""
    import threading

    from catdog import storage
    from tests.feedback_fixtures import FakePredictor, started_service

    url = f"sqlite:///{tmp_path}/store/feedback.db" if backend == "sqlite" else request.getfixturevalue(f"{backend}_db_url")
    a, b = (started_service(tmp_path, url, predictor=FakePredictor()) for _ in range(2))
    a_copying, b_done = threading.Event(), threading.Event()
    real_copy = storage.copy

    def copy_that_waits_for_b(source, target):
        if "/dataset/cat/" in target and not a_copying.is_set():
            a_copying.set()
            b_done.wait(3)  # B gets every chance to overtake A here
        real_copy(source, target)

    monkeypatch.setattr(storage, "copy", copy_that_waits_for_b)
    try:
        prediction = a.predict(photo(7))
        b_thread = threading.Thread(target=lambda: (a_copying.wait(10), b.validate(prediction.id, "dog"), b_done.set()))
        b_thread.start()
        a.validate(prediction.id, "cat")
        b_thread.join(60)
        assert b_done.is_set()
        final = b.get(prediction.id).photo
        assert (final.label, final.published_label) == ("dog", "dog")
        assert a.photos.dataset_files() == {"cat": [], "dog": [f"{prediction.photo_sha256}.jpg"]}
    finally:
        a.close()
        b.close()
