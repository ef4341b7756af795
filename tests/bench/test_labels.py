"""bench.labels on a small source laid out as the shared data: the train photos and their labels,
the flips it plants in memory and the summary it counts (synthetic features: no backbone)."""

from __future__ import annotations

import numpy as np

from bench import labels as bench
from tests.helpers import make_source_with_splits


def test_the_bench_plants_flips_and_counts_the_caught_ones(tmp_path):
    source = make_source_with_splits(tmp_path, train=40, validation=2)
    before = {p: p.read_bytes() for p in source.rglob("*.jpg")}
    files, labels, class_names = bench.train_photos(source)
    assert class_names == ["cat", "dog"] and len(files) == 80
    assert all((f.parent.name == "cats") == (y == 0) for f, y in zip(files, labels))
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 16))[labels] * 2 + rng.normal(size=(80, 16))
    row, entries, page = bench.run_seed(features.astype(np.float32), labels, files, class_names, source, seed=3)
    assert (row["photos"], row["flips"], row["listed"]) == (80, 4, 8)
    assert row["caught"] + row["false_alarms"] == 8 and row["recall"] == row["caught"] / 4
    assert row["caught"] >= 3  # clusters this far apart: a flipped label stands out
    assert entries and page.count("data:image/jpeg;base64,") >= 1
    assert {p: p.read_bytes() for p in source.rglob("*.jpg")} == before  # the files are not touched
