"""bench/active.py on synthetic features: the strategies pick what they claim, and the loop reports
every strategy after every round."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench import active


def test_least_confident_picks_the_boundary():
    probabilities = np.array([[0.99, 0.01], [0.52, 0.48], [0.2, 0.8], [0.45, 0.55], [0.9, 0.1]])
    assert active.least_confident(probabilities, 2).tolist() == [1, 3]
    x = np.random.default_rng(0).permutation(np.linspace(-3, 3, 61))[:, None]  # a 1-D pool, shuffled
    dog = 1 / (1 + np.exp(-4 * (x[:, 0] - 1.0)))  # a model whose boundary is at x = 1
    chosen = active.pick("least_confident", np.c_[1 - dog, dog], x, x, np.zeros(61, int), 2, 5,
                         np.random.default_rng(0))
    assert sorted(np.round(x[chosen, 0], 1).tolist()) == [0.8, 0.9, 1.0, 1.1, 1.2]


def test_diverse_takes_spread_points_among_the_least_confident(monkeypatch):
    monkeypatch.setattr(active, "CANDIDATES", 4)  # the 4 least confident are the candidates
    x = np.array([[0.0, 0], [0.01, 0], [0.02, 0], [5.0, 0], [9.0, 0]])
    probabilities = np.array([[0.5, 0.5], [0.51, 0.49], [0.52, 0.48], [0.53, 0.47], [0.99, 0.01]])
    # labelled photos of both classes (the embedding is fitted on them, as the model's on its training photos)
    labelled_x, labelled_y = np.array([[-1.0, 0], [1, 0], [-1, 0.1], [1, 0.1]]), np.array([0, 0, 1, 1])
    picked = active.pick("diverse", probabilities, x, labelled_x, labelled_y, 2, 2, np.random.default_rng(0))
    assert sorted(picked.tolist()) in ([0, 3], [1, 3], [2, 3])  # not two near-copies; 4 is confident
    assert sorted(active.least_confident(probabilities, 2).tolist()) == [0, 1]  # what plain least confident takes


def test_ood_first_picks_the_far_photos():
    rng = np.random.default_rng(1)
    labelled = rng.normal(size=(40, 80))  # the score keeps the directions past the top min(64, n - 2)
    labels = np.arange(40) % 2
    pool = np.concatenate([rng.normal(size=(10, 80)), np.full((2, 80), 3.0)])
    chosen = active.pick("ood_first", np.full((12, 2), 0.5), pool, labelled, labels, 2, 2, rng)
    assert sorted(chosen.tolist()) == [10, 11]


def _synthetic(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 8))
    x[:, 0] += 1.5 * (2 * y - 1)
    return x.astype(np.float32), y


def test_the_loop_reports_every_strategy_after_every_round(tmp_path, capsys):
    rng = np.random.default_rng(0)
    pool_x, pool_y = _synthetic(120, rng)
    test_x, test_y = _synthetic(60, rng)
    summary = active.run(pool_x, pool_y, test_x, test_y, [0, 1], start=10, batch=5, rounds=3)
    assert summary["labels_used"] == [10, 15, 20, 25]
    assert set(summary["accuracy"]) == set(active.STRATEGIES)
    assert all(len(a) == 4 and all(0 <= v <= 1 for v in a) for a in summary["accuracy"].values())
    assert len({a[0] for a in summary["accuracy"].values()}) == 1  # every strategy starts from the same labels
    assert len(summary["runs"]) == 2 * len(active.STRATEGIES)
    assert 0 <= summary["all_labelled"] <= 1
    assert summary["least_confident_minus_random"] == [
        round(a - b, 4) for a, b in zip(summary["accuracy"]["least_confident"], summary["accuracy"]["random"])]


def test_main_caches_the_features_and_ends_with_the_json(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(2)
    arrays = dict(zip(("pool_x", "pool_y"), _synthetic(80, rng))) | dict(zip(("test_x", "test_y"), _synthetic(40, rng)))
    calls = []
    monkeypatch.setattr(active, "cached_features", lambda data, weights, cache: (calls.append(cache) or arrays, 1.0))
    summary = active.main(["--data", str(tmp_path), "--weights", "w.h5", "--seeds", "0", "--start", "10",
                           "--batch", "10", "--rounds", "2", "--output", str(tmp_path / "out"), "--no-write"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == json.loads(json.dumps(summary))
    assert set(last["accuracy"]) == set(active.STRATEGIES) and last["labels_used"] == [10, 20, 30]
    assert calls == [tmp_path / "out" / "features.npz"]
    assert (tmp_path / "out" / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    written = json.loads((tmp_path / "out" / "runs.json").read_text())
    assert "| labels used |" in active.table(written, "make x", 1.0, 2.0) and len(written["runs"]) == 4


def test_a_balanced_start():
    labels = np.array([0] * 50 + [1] * 30)
    start = active.balanced_start(labels, 20, np.random.default_rng(0))
    assert np.bincount(labels[start]).tolist() == [10, 10] and len(set(start.tolist())) == 20
    with pytest.raises(ValueError, match="unknown strategy"):
        active.pick("oldest", np.zeros((1, 2)), np.zeros((1, 1)), np.zeros((1, 1)), np.zeros(1, int), 2, 1,
                    np.random.default_rng(0))


def test_the_features_are_computed_once_and_cached(tmp_path, monkeypatch):
    import bench.labels

    from tests.serving_fixtures import photo

    for split in ("train", "validation"):
        for i, folder in enumerate(("cats", "dogs")):
            (tmp_path / "data" / split / folder).mkdir(parents=True)
            (tmp_path / "data" / split / folder / f"{split}{i}.jpg").write_bytes(photo(i))
    calls = []

    def fake_features(files, weights, config):
        calls.append(len(files))
        return np.arange(len(files) * 3, dtype=np.float32).reshape(len(files), 3)

    monkeypatch.setattr(bench.labels, "features_of", fake_features)
    cache = tmp_path / "out" / "features.npz"
    first, seconds = active.cached_features(tmp_path / "data", "w.h5", cache)
    again, cached_seconds = active.cached_features(tmp_path / "data", "w.h5", cache)
    assert calls == [2, 2] and cached_seconds == 0.0  # once for the pool, once for the test set
    assert all(np.array_equal(first[k], again[k]) for k in first) and first["pool_y"].tolist() == [0, 1]
    active.cached_features(tmp_path / "data", "other.h5", cache)  # other weights: computed again
    assert calls == [2, 2, 2, 2]
