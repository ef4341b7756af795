"""16 clients uploading and validating at once lose nothing, on SQLite and PostgreSQL (and MariaDB):
every answer is 2xx, every row and file is there, and racing verdicts on one photo end on the latest."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from feedback import store
from feedback.models import Photo, Prediction, Validation
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
            codes.append(app.validate(common.json()["id"], "cat" if n % 2 else "dog", by=f"c{n}").status_code)
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
            history = store.validations_of(session, shared_sha)
            assert len(history) == CLIENTS and photos[shared_sha].label == history[-1].label  # the latest wins
            assert all(p.published_label == p.label for p in photos.values())
        dataset = service.photos.dataset_files()
        published = {(label, name.split(".")[0]) for label, names in dataset.items() for name in names}
        assert published == {(p.label, p.sha256) for p in photos.values()}  # each photo once, in its verdict's folder
        service.flush_manifest()  # the maintenance thread would within a second
        manifest = service.photos.read_manifest()
        assert sorted(e["sha256"] for e in manifest) == sorted(photos)
        stored = list((Path(service.settings.feedback_uri) / "photos").rglob("*.jpg"))
        assert len(stored) == 2 * CLIENTS + 1
        assert not list(Path(service.settings.feedback_uri).rglob(".*.tmp-*"))  # no temporary file left behind
