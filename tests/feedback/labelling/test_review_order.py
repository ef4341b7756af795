"""The review queue's order (REVIEW_ORDER, GET /api/review-queue?order=..., /review?order=...) on
SQLite, PostgreSQL and MariaDB: least_confident, newest, ood_first (flagged first, then the
highest ood_score, unscored last), random (one shuffle per seed)."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from feedback.settings import REVIEW_ORDERS, SettingsError, load_settings
from feedback.store import queries
from tests.feedback_fixtures import FakePredictor, database_url, photo, started_service  # noqa: F401 (fixture)

OOD = {"threshold": 5.0}


def _queue(service, confidences: dict[int, float], scores: dict[int, float | None]) -> dict[int, str]:
    """One prediction per photo seed with its confidence and ood_score (None: a model without the
    score); prediction ids by seed, made in seed order (the newest last)."""
    fake: FakePredictor = service.predictor
    made = {}
    for seed, p in confidences.items():
        fake.answer(photo(seed), {"cat": p, "dog": 1 - p})
        score = scores.get(seed)
        fake.ood = None if score is None else OOD
        if score is not None:
            fake.flag(photo(seed), score)
        made[seed] = service.predict(photo(seed)).id
    return made


@pytest.fixture
def service(tmp_path, database_url):  # noqa: F811 (the fixture above)
    service = started_service(tmp_path, database_url, predictor=FakePredictor(ood=OOD))
    yield service
    service.close()


def test_each_order_of_the_queue(service):
    confidences = {40: 0.9, 41: 0.55, 42: 0.7, 43: 0.6, 44: 0.8}
    scores = {40: 9.0, 41: 1.0, 42: None, 43: 3.0, 44: 7.0}  # 40, 44 flagged (above 5.0); 42 unscored
    made = _queue(service, confidences, scores)
    ids = lambda *seeds: [made[s] for s in seeds]  # noqa: E731

    def order(name, seed=None, limit=50):
        with service.db.read() as session:
            return [p.id for p in queries.review_queue(session, limit, name, seed)]

    assert order("least_confident") == ids(41, 43, 42, 44, 40)
    assert order("newest") == ids(44, 43, 42, 41, 40)
    assert order("ood_first") == ids(40, 44, 43, 41, 42)
    shuffled = order("random", seed=7)
    assert sorted(shuffled) == sorted(made.values())
    assert order("random", seed=7) == shuffled  # the same seed, the same order
    assert order("random", seed=7, limit=2) == shuffled[:2]
    assert len({tuple(order("random", seed=s)) for s in range(8)}) > 1  # seeds differ (5! orders)
    with pytest.raises(ValueError, match="seed"):
        order("random")


def test_the_diverse_order_spreads_a_page_over_the_embedding(service):
    """Among the least confident, farthest first from the judged photos and from each other; photos
    without an embedding (an older model) follow in least-confident order."""
    fake: FakePredictor = service.predictor
    # three clusters in the embedding: around (0, 0) (one photo judged there), (10, 0) and (0, 10)
    places = {60: (0, 0), 61: (0.1, 0), 62: (0, 0.2), 63: (10, 0), 64: (9.9, 0), 65: (0, 10), 66: (0.2, 0.1)}
    confidences = {60: 0.51, 61: 0.52, 62: 0.53, 63: 0.6, 64: 0.54, 65: 0.7, 66: 0.55, 67: 0.56}
    for seed, place in places.items():
        fake.embed(photo(seed), place)
    made = _queue(service, confidences, {})  # 67: no embedding
    service.validate(made[60], "cat", "ana")  # judged: its cluster is covered
    ids = lambda *seeds: [made[s] for s in seeds]  # noqa: E731

    def order(limit):
        with service.db.read() as session:
            return [p.id for p in queries.review_queue(session, limit, "diverse")]

    # the pool is 5 x limit least confident; with limit 3 that is all 7 queued photos
    assert order(3) == ids(63, 65, 66)  # (10, 0) is farthest from the judged (0, 0), then (0, 10)
    assert order(7)[:2] == ids(63, 65) and order(7)[-1] == made[67]  # the photo without an embedding last
    assert sorted(order(7)) == sorted(ids(61, 62, 63, 64, 65, 66, 67))
    with service.db.read() as session:  # the embedding is stored as float32 bytes
        stored = queries.get_prediction(session, made[63]).embedding
    assert np.frombuffer(stored, "<f4").tolist() == [10.0, 0.0]
    page = service.review_queue(2, "diverse")
    assert page.order == "diverse" and [p.id for p in page.predictions] == ids(63, 65)


def test_diverse_without_any_embedding_is_least_confident(service):
    made = _queue(service, {70: 0.8, 71: 0.6, 72: 0.7}, {})
    with service.db.read() as session:
        assert [p.id for p in queries.review_queue(session, 10, "diverse")] == [made[71], made[72], made[70]]


def test_the_random_order_of_an_empty_queue(service):
    with service.db.read() as session:
        assert queries.review_queue(session, 50, "random", 3) == []
    assert service.review_queue(24, "random").predictions == []


def test_the_setting_is_the_default_and_the_request_overrides_it(tmp_path, database_url):  # noqa: F811
    service = started_service(tmp_path, database_url, predictor=FakePredictor(ood=OOD), review_order="newest")
    try:
        made = _queue(service, {50: 0.9, 51: 0.6}, {50: 1.0, 51: 1.0})
        page = service.review_queue(10)
        assert (page.order, page.seed, [p.id for p in page.predictions]) == ("newest", None, [made[51], made[50]])
        assert [p.id for p in service.review_queue(10, "least_confident").predictions] == [made[51], made[50]]
        drawn = service.review_queue(10, "random")
        assert drawn.seed is not None
        again = service.review_queue(10, "random", drawn.seed)
        assert [p.id for p in again.predictions] == [p.id for p in drawn.predictions]
    finally:
        service.close()


def test_review_order_setting_is_checked():
    assert load_settings({"REVIEW_ORDER": "ood_first"}).review_order == "ood_first"
    assert load_settings({}).review_order == REVIEW_ORDERS[0] == "least_confident"
    with pytest.raises(SettingsError, match="REVIEW_ORDER"):
        load_settings({"REVIEW_ORDER": "oldest"})


def test_the_api_and_the_page_take_the_order(tmp_path):
    from feedback.web.app import create_app

    service = started_service(tmp_path, f"sqlite:///{tmp_path}/db/feedback.db", predictor=FakePredictor(ood=OOD))
    made = _queue(service, {60: 0.9, 61: 0.6, 62: 0.7}, {60: 9.0, 61: 1.0, 62: 2.0})
    with TestClient(create_app(service), base_url="http://127.0.0.1") as client:
        answer = client.get("/api/review-queue", params={"order": "ood_first"})
        assert answer.status_code == 200, answer.text
        answer = answer.json()
        assert answer["order"] == "ood_first" and answer["seed"] is None
        assert [p["id"] for p in answer["predictions"]] == [made[60], made[62], made[61]]
        assert client.get("/api/review-queue").json()["order"] == "least_confident"
        first = client.get("/api/review-queue", params={"order": "random", "seed": 11}).json()
        assert first["seed"] == 11 and len(first["predictions"]) == 3
        second = client.get("/api/review-queue", params={"order": "random", "seed": 11}).json()
        assert [p["id"] for p in second["predictions"]] == [p["id"] for p in first["predictions"]]
        bad = client.get("/api/review-queue", params={"order": "oldest"})
        assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/json")
        assert "order" in bad.text
        assert client.get("/api/review-queue", params={"order": "random", "seed": -1}).status_code == 422
        page = client.get("/review", params={"order": "ood_first", "seed": 1})
        assert page.status_code == 200 and 'data-order="ood_first"' in page.text
        assert page.text.index(made[60]) < page.text.index(made[62]) < page.text.index(made[61])
        assert 'href="/review?order=random"' in page.text and 'href="/review?order=ood_first"' not in page.text
        assert client.get("/review", params={"order": "oldest"}).status_code == 422
