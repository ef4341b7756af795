"""catdog.label_issues on synthetic features: planted label flips, near duplicates and outliers are
found; the JSON list and the HTML page say what they must (escaped); the step runs on artifacts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from catdog import label_issues as li
from catdog.dataset import original_rows

CLASSES = ["cat", "dog"]


def clusters(n_per_class: int = 100, d: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two separable Gaussian clusters of 'pooled features' (cosine similarity within a class about
    0.5, far below the duplicate threshold), labels 0 and 1."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, size=(2, d))
    labels = np.repeat([0, 1], n_per_class)
    return (centres[labels] + rng.normal(0, 1, size=(len(labels), d))).astype(np.float32), labels


def photos(n: int) -> list[li.Photo]:
    return [li.Photo(f"{i:064x}", "train" if i % 4 else "validation", "data", f"cats/cat.{i}.jpg", f"images/{i}.jpg")
            for i in range(n)]


def test_planted_label_flips_rank_first_and_cleanlab_flags_them():
    features, labels = clusters()
    flips = np.random.default_rng(1).choice(len(labels), 10, replace=False)
    noisy = labels.copy()
    noisy[flips] = 1 - noisy[flips]
    findings = li.find_issues(features, noisy, 2, seed=0)
    assert findings.probabilities.shape == (200, 2)
    np.testing.assert_allclose(findings.probabilities.sum(axis=1), 1, atol=1e-6)
    top = np.argsort(findings.quality, kind="stable")[:20]
    assert set(flips) <= set(top)
    assert len(set(flips) & set(findings.label_issues)) >= 8 and len(findings.label_issues) < 20
    ranked = findings.quality[findings.label_issues]
    assert list(ranked) == sorted(ranked)  # lowest label quality first


def test_near_duplicates_and_outliers_are_found():
    features, labels = clusters()
    features[7] = features[150] * 1.001  # the same photo twice (a resized copy): same direction
    features[42] = 40.0 * np.eye(32, dtype=np.float32)[3]  # far from every other photo
    findings = li.find_issues(features, labels, 2, seed=0, outlier_fraction=0.01)
    assert [(i, j) for i, j, _ in findings.duplicates] == [(7, 150)]
    assert findings.duplicates[0][2] > 0.999
    assert 42 in findings.outliers and len(findings.outliers) == 2
    assert findings.outliers[0] == 42


def test_suspects_entries_merge_reasons_and_rank_label_issues_first():
    features, labels = clusters()
    noisy = labels.copy()
    noisy[[3, 4, 5]] = 1  # cats labelled dog
    features[10] = features[160] * 1.001  # a near duplicate with the other label
    findings = li.find_issues(features, noisy, 2, seed=0)
    entries = li.suspects(findings, noisy, photos(len(noisy)), CLASSES)
    assert [e["rank"] for e in entries] == list(range(1, len(entries) + 1))
    kinds = ["label" in e["reasons"] for e in entries]
    assert kinds == sorted(kinds, reverse=True)  # label issues first
    by_sha = {e["sha256"]: e for e in entries}
    flipped = by_sha[f"{3:064x}"]
    assert flipped["given_label"] == "dog" and "label" in flipped["reasons"]
    assert flipped["probabilities"]["cat"] > 0.5 and set(flipped["probabilities"]) == set(CLASSES)
    a, b = by_sha[f"{10:064x}"], by_sha[f"{160:064x}"]  # a cat labelled cat that looks like dog 160
    assert a["reasons"] == ["label", "near-duplicate"] and a["duplicates"][0]["sha256"] == b["sha256"]
    assert b["reasons"] == ["near-duplicate"]
    assert b["duplicates"][0] == {"sha256": a["sha256"], "similarity": a["duplicates"][0]["similarity"], "label": "cat"}
    assert len(by_sha) == len(entries)  # one entry per photo, whatever its reasons
    assert json.loads(json.dumps(entries)) == entries


def test_the_page_escapes_names_and_shows_pairs_side_by_side():
    features, labels = clusters(n_per_class=30)
    labels[0] = 1
    features[5] = features[40] * 1.001
    hostile = [li.Photo(p.sha256, p.split, p.origin, f"<script>alert({i})</script>&.jpg", p.file)
               for i, p in enumerate(photos(len(labels)))]
    findings = li.find_issues(features, labels, 2, seed=0)
    entries = li.suspects(findings, labels, hostile, ["<b>cat</b>", "dog"])
    page = li.report_html(entries, lambda e: li.thumbnail_jpeg(_jpeg()), len(labels))
    assert "<script>" not in page and "<b>cat</b>" not in page
    shown = int(entries[0]["source"].split("(")[1].split(")")[0])
    assert f"&lt;script&gt;alert({shown})&lt;/script&gt;&amp;.jpg" in page and "&lt;b&gt;cat&lt;/b&gt;" in page
    assert page.count('<div class="pair conflict">') == 1  # photo 5 (a cat) and 40 (a dog)
    assert "Near-duplicate pairs: 1 pair<" in page and "data:image/jpeg;base64," in page


def _jpeg() -> bytes:
    from tests.helpers import image_bytes

    return image_bytes(size=(300, 200))


def test_thumbnails_are_small():
    from PIL import Image
    import io

    assert Image.open(io.BytesIO(li.thumbnail_jpeg(_jpeg()))).size == (li.THUMBNAIL_SIDE, 85)


def test_out_of_fold_needs_two_photos_a_class():
    with pytest.raises(ValueError, match="at least 2 photos"):
        li.out_of_fold_probabilities(np.zeros((3, 4)), np.array([0, 0, 1]), 2)


@pytest.mark.parametrize("count,batch", [(10, 4), (8, 4), (3, 8)])
def test_original_rows_pick_the_photos_out_of_split_features_mirrored_layout(count, batch):
    rows = []  # split_features(mirrored=True): per batch, its photos then their mirror images
    for start in range(0, count, batch):
        photos_ = list(range(start, min(start + batch, count)))
        rows += photos_ + [-1 - p for p in photos_]
    assert np.asarray(rows)[original_rows(count, batch, True)].tolist() == list(range(count))
    assert original_rows(count, batch, False).tolist() == list(range(count))


def test_from_artifacts_runs_the_step_on_the_train_steps_features(tmp_path):
    from catdog.dataset import save_split_features
    from tests.model_fixtures import make_dataset

    built = make_dataset(tmp_path, {"cat": 12, "dog": 12})
    rng = np.random.default_rng(0)
    features = {}
    for split in ("train", "validation"):
        count = built.metadata["splits"][split]["count"]
        labels = rng.integers(0, 2, count)
        features[split] = (np.abs(rng.normal(size=(count, 16))) + 3 * labels[:, None], labels)
    with pytest.raises(ValueError, match="features for"):
        save_split_features(tmp_path / "bad", built.dataset_dir, {"train": features["validation"]}, "test")
    save_split_features(tmp_path / "features", built.dataset_dir, features, "synthetic")
    entries, page, summary = li.from_artifacts(tmp_path / "features", built.ingest_dir, seed=0)
    n = sum(built.metadata["splits"][s]["count"] for s in ("train", "validation"))
    assert summary["n_photos"] == n and summary["listed"] == len(entries) >= 1
    files = {r.sha256: r.file for r in built.result.images}
    for entry in entries:
        assert entry["sha256"] in built.metadata["splits"][entry["split"]]["sha256"]
        assert entry["file"] == files[entry["sha256"]] and (built.ingest_dir / entry["file"]).is_file()
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/jpeg;base64,") >= 1
