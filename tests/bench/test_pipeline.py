"""make bench's seeds: SEEDS parsing and the per-seed, median and baseline report (no training)."""

from __future__ import annotations

import pytest

from bench.pipeline import TEST_METRICS, main, median_row, parse_seeds, report_lines
from pipelines.config import ConfigError


def _run(seed: int, accuracy: float, seconds: float) -> dict:
    metrics = dict.fromkeys(TEST_METRICS, 0.5) | {"accuracy": accuracy, "log_loss": 0.05, "ece": 0.01}
    return {"seed": seed, "seconds": seconds, "steps": {"ingest": 1.0, "train": seconds - 1.0}, "n": 1000,
            "class_names": ["cat", "dog"], "confusion_matrix": [[490, 10], [5, 495]], **metrics}


def test_parse_seeds():
    assert parse_seeds("42,1, 2") == [42, 1, 2]
    for bad in ("", "1,1", "a,2"):
        with pytest.raises(ConfigError, match="SEEDS"):
            parse_seeds(bad)


def test_report_gives_every_seed_the_median_and_the_baseline_beside_them():
    runs = [_run(42, 0.981, 180.0), _run(1, 0.976, 200.0), _run(2, 0.982, 190.0)]
    assert median_row(runs)["accuracy"] == 0.981 and median_row(runs)["seconds"] == 190.0
    text = "\n".join(report_lines(runs, {"epochs": 20, "seconds": 200.0, "accuracy": 0.937, "n_test": 1000}))
    assert "| step | seed 42 (s) | seed 1 (s) | seed 2 (s) |" in text
    assert "| 1 | 0.9760 | 0.0500 | 0.0100 |" in text  # each seed: accuracy, log loss, ECE, ...
    assert "| **median of 3** | **0.9810** | **0.0500** | **0.0100** |" in text
    assert "| this pipeline, all steps (median of 3 seeds) | 190.0 | 0.9810 | 1000 |" in text
    assert "pipeline / baseline = **0.95x** (per seed: 0.90x, 1.00x, 0.95x)" in text
    assert "**+4.4 points**" in text
    assert "tutorial" not in "\n".join(report_lines(runs, None))


def test_bench_takes_seeds_not_seed(capsys):
    with pytest.raises(ConfigError, match="SEEDS=42,1,2"):
        main(["--data", "d", "--weights", "w", "seed=3"])
    with pytest.raises(ConfigError, match="unknown setting"):
        main(["--data", "d", "--weights", "w", "SEED=3"])
