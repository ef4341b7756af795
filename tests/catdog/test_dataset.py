"""Preprocess: the seeded stratified split, and the TFRecord dataset written once and read by tf.data."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from catdog.dataset import (
    SPLITS,
    SplitRatios,
    encode_resized,
    load_metadata,
    load_split,
    split_dataset,
    write_dataset,
)
from catdog.ingest import ImageRecord, IngestResult, ingest_dataset
from catdog.preprocessing import image_to_pixels
from tests.helpers import IMAGES_PER_CLASS, make_class_folders, make_source_with_splits
from tests.model_fixtures import load_split_arrays

DEFAULT = SplitRatios(0.7, 0.2, 0.1)


def record(label: str, i: int, source_split: str | None = None, name: str | None = None) -> ImageRecord:
    sha = hashlib.sha256(f"{label}-{source_split}-{i}".encode()).hexdigest()
    source = name or f"{source_split + '/' if source_split else ''}{label}/{label}_{i:04d}.jpg"
    return ImageRecord(f"images/{label}/{sha[:24]}.jpg", label, source, source_split, sha, 64, 48, "JPEG")


def class_folders_result(counts: dict[str, int]) -> IngestResult:
    images = [record(label, i) for label, n in counts.items() for i in range(n)]
    return IngestResult(sorted(counts), "class_folders", images)


def shas(parts) -> dict[str, list[str]]:
    return {split: sorted(r.sha256 for r in records) for split, records in parts.items()}


def test_same_seed_same_split():
    result = class_folders_result({"cat": 40, "dog": 30})
    first, policy = split_dataset(result, DEFAULT, seed=7)
    second, _ = split_dataset(result, DEFAULT, seed=7)
    assert shas(first) == shas(second)
    assert [r.sha256 for r in first["train"]] == [r.sha256 for r in second["train"]]  # order too
    assert "seed 7" in policy


def test_different_seed_different_split():
    result = class_folders_result({"cat": 40, "dog": 30})
    assert shas(split_dataset(result, DEFAULT, seed=1)[0]) != shas(split_dataset(result, DEFAULT, seed=2)[0])


def test_split_independent_of_file_order_and_names():
    result = class_folders_result({"cat": 40, "dog": 30})
    shuffled = list(result.images)
    random.Random(3).shuffle(shuffled)
    renamed = [
        ImageRecord(r.file, r.label, f"elsewhere/{k:05d}.jpeg", r.source_split, r.sha256, r.width, r.height, r.format)
        for k, r in enumerate(shuffled)
    ]
    other = IngestResult(result.class_names, result.layout, renamed)
    assert shas(split_dataset(other, DEFAULT, seed=42)[0]) == shas(split_dataset(result, DEFAULT, seed=42)[0])


@pytest.mark.parametrize(
    "counts, ratios",
    [
        ({"cat": 100, "dog": 50}, DEFAULT),
        ({"cat": 11, "dog": 23}, DEFAULT),
        ({"cat": 37, "dog": 64}, SplitRatios(0.5, 0.25, 0.25)),
    ],
)
def test_split_is_stratified(counts, ratios):
    parts, _ = split_dataset(class_folders_result(counts), ratios, seed=0)
    fractions = {"train": ratios.train, "validation": ratios.validation, "test": ratios.test}
    for label, n in counts.items():
        per_split = {split: sum(r.label == label for r in parts[split]) for split in SPLITS}
        assert sum(per_split.values()) == n
        for split in SPLITS:
            assert abs(per_split[split] - n * fractions[split]) <= 1, (label, split, per_split)
    if counts == {"cat": 100, "dog": 50}:  # exact where the ratios divide evenly
        assert {s: Counter(r.label for r in parts[s]) for s in SPLITS} == {
            "train": {"cat": 70, "dog": 35}, "validation": {"cat": 20, "dog": 10}, "test": {"cat": 10, "dog": 5},
        }


def test_splits_are_disjoint_and_cover_everything():
    result = class_folders_result({"cat": 33, "dog": 29})
    parts, _ = split_dataset(result, DEFAULT, seed=5)
    all_shas = [r.sha256 for split in SPLITS for r in parts[split]]
    assert len(all_shas) == len(set(all_shas)) == len(result.images)


def test_train_validation_layout_keeps_source_validation_as_test():
    images = [record(c, i, "train") for c in ("cats", "dogs") for i in range(40)]
    images += [record(c, i, "validation") for c in ("cats", "dogs") for i in range(15)]
    result = IngestResult(["cats", "dogs"], "train_validation", images)
    parts, policy = split_dataset(result, DEFAULT, seed=42)
    held_out = {r.sha256 for r in images if r.source_split == "validation"}
    assert {r.sha256 for r in parts["test"]} == held_out
    assert all(r.source_split == "train" for s in ("train", "validation") for r in parts[s])
    sets = {s: {r.sha256 for r in parts[s]} for s in SPLITS}
    assert not (sets["train"] & sets["validation"]) and not (sets["train"] & sets["test"])
    assert not (sets["validation"] & sets["test"])
    # train/ is cut train:validation = 0.7:0.2 per class, i.e. 40 -> 31 + 9
    assert Counter(r.label for r in parts["validation"]) == {"cats": 9, "dogs": 9}
    assert Counter(r.label for r in parts["train"]) == {"cats": 31, "dogs": 31}
    assert "validation/ folder is the held-out test split" in policy


def test_split_with_an_empty_class_split_fails():
    with pytest.raises(ValueError, match="split leaves no image in"):
        split_dataset(class_folders_result({"cat": 3, "dog": 30}), SplitRatios(0.8, 0.1, 0.1), seed=0)


@pytest.fixture(scope="module")
def written_dataset(tmp_path_factory):
    """A small source ingested and written at 32x32 (module-scoped: TF work done once)."""
    root = tmp_path_factory.mktemp("written")
    source = make_class_folders(root / "data", {"cat": IMAGES_PER_CLASS, "dog": IMAGES_PER_CLASS + 4})
    result = ingest_dataset(str(source), root / "ingested", cache_dir=root / "cache")
    metadata = write_dataset(result, root / "ingested", root / "dataset", DEFAULT, image_size=32, seed=3, max_pixels=10**6)
    return root, result, metadata


def test_write_dataset_metadata(written_dataset):
    root, result, metadata = written_dataset
    assert load_metadata(root / "dataset") == metadata
    assert json.loads((root / "dataset" / "dataset.json").read_text()) == metadata
    assert metadata["class_names"] == ["cat", "dog"]
    assert (metadata["image_size"], metadata["seed"]) == (32, 3)
    assert metadata["fingerprint"] == result.fingerprint
    counts = {s: metadata["splits"][s]["count"] for s in SPLITS}
    assert counts == {"train": 17, "validation": 5, "test": 2}  # cat 7/2/1, dog 10/3/1
    assert metadata["splits"]["train"]["class_counts"] == {"cat": 7, "dog": 10}
    assert sum(counts.values()) == len(result.images)
    for split in SPLITS:
        assert len(metadata["splits"][split]["sha256"]) == counts[split]
        for shard in metadata["splits"][split]["shards"]:
            assert (root / "dataset" / shard).is_file()


def test_load_split_round_trip(written_dataset):
    root, result, metadata = written_dataset
    label_of = {r.sha256: metadata["class_names"].index(r.label) for r in result.images}
    file_of = {r.sha256: r.file for r in result.images}
    for split in SPLITS:
        element_spec = load_split(root / "dataset", split).element_spec
        assert tuple(element_spec[0].shape) == (32, 32, 3)
        images, labels = load_split_arrays(root / "dataset", split)
        assert images.dtype == np.float32 and images.shape == (metadata["splits"][split]["count"], 32, 32, 3)
        expected = [label_of[sha] for sha in metadata["splits"][split]["sha256"]]
        assert labels.tolist() == expected
        assert 0.0 <= images.min() and images.max() <= 255.0
        # the shard holds the serving-side preprocessing's pixels for that file, JPEG-encoded
        first_sha = metadata["splits"][split]["sha256"][0]
        path = root / "ingested" / file_of[first_sha]
        shard = root / "dataset" / metadata["splits"][split]["shards"][0]
        record = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(str(shard)))).numpy())
        assert record.features.feature["image"].bytes_list.value[0] == encode_resized(path, 32, 10**6)
        reference = image_to_pixels(path.read_bytes(), 32).astype(np.float32)
        assert np.abs(images[0] - reference).mean() < 12  # JPEG 90 of synthetic noise; 1.8 on photos


def test_write_dataset_train_validation_source(tmp_path):
    source = make_source_with_splits(tmp_path / "src", train=10, validation=4)
    result = ingest_dataset(str(source.parent), tmp_path / "ingested", cache_dir=tmp_path / "cache")
    metadata = write_dataset(result, tmp_path / "ingested", tmp_path / "dataset", DEFAULT, 32, 0, 10**6)
    held_out = {r.sha256 for r in result.images if r.source_split == "validation"}
    assert set(metadata["splits"]["test"]["sha256"]) == held_out
    assert metadata["splits"]["test"]["class_counts"] == {"cats": 4, "dogs": 4}
    trained_on = set(metadata["splits"]["train"]["sha256"]) | set(metadata["splits"]["validation"]["sha256"])
    assert not trained_on & held_out
    assert len(trained_on) == 20
    _, labels = load_split_arrays(Path(tmp_path / "dataset"), "test")
    assert sorted(labels.tolist()) == [0] * 4 + [1] * 4


def test_one_process_or_two_write_the_same_shards(tmp_path):
    source = make_class_folders(tmp_path / "src", {"cat": 12, "dog": 12})
    result = ingest_dataset(str(source), tmp_path / "ingested", cache_dir=tmp_path / "cache")
    one = write_dataset(result, tmp_path / "ingested", tmp_path / "one", DEFAULT, 32, 0, 10**6, workers=1)
    two = write_dataset(result, tmp_path / "ingested", tmp_path / "two", DEFAULT, 32, 0, 10**6, workers=2)
    assert one == two
    for split in SPLITS:
        for shard in one["splits"][split]["shards"]:
            assert (tmp_path / "one" / shard).read_bytes() == (tmp_path / "two" / shard).read_bytes()


def test_the_shuffled_stream_is_seeded_and_holds_every_photo_once(written_dataset):
    root, _, metadata = written_dataset

    def labels_in_order(seed):
        return [int(y) for _, y in load_split(root / "dataset", "train", shuffle_seed=seed).as_numpy_iterator()]

    first = labels_in_order(3)
    assert first == labels_in_order(3)
    assert sorted(first) == sorted(load_split_arrays(root / "dataset", "train")[1].tolist())
    assert len(first) == metadata["splits"]["train"]["count"]


def test_splits_know_their_length_and_a_wrong_count_is_an_error(written_dataset, tmp_path):
    import shutil

    root, _, metadata = written_dataset
    count = metadata["splits"]["train"]["count"]
    for seed in (None, 3):
        batches = load_split(root / "dataset", "train", shuffle_seed=seed).batch(4)
        assert int(batches.cardinality()) == -(-count // 4)  # Keras reads it for its progress and epochs
    copy = shutil.copytree(root / "dataset", tmp_path / "dataset")
    bad = json.loads((copy / "dataset.json").read_text())
    bad["splits"]["train"]["count"] = count + 1  # dataset.json and the shards disagree
    (copy / "dataset.json").write_text(json.dumps(bad))
    with pytest.raises(tf.errors.FailedPreconditionError, match=f"expected to contain {count + 1} elements but contained only {count}"):
        list(load_split(copy, "train").as_numpy_iterator())
