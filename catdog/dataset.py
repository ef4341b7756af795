"""Preprocess: a seeded stratified split, decode + resize once, TFRecord shards for tf.data.

Format: TFRecord shards of already-resized uint8 pixels. Each image is decoded and resized once
(by catdog.preprocessing, the same code the server runs), so training epochs read fixed-size
tensors with no JPEG decoding on a 2-core CPU; TFRecord is tf.data's native, streamable format
(it reads straight from gs:// on Vertex), and shards let tf.data interleave reads.

Split: the data's photos are split stratified by class (or by the source's own folders) exactly as
when there is no feedback; each feedback photo goes to train/validation/test by a hash of
(seed, sha256), so its split never changes as more feedback arrives (see split_dataset).

dataset.json: per split, "count", "class_counts", "shards", "sha256" (the photos in file order),
"origins" (parallel to "sha256": "data" or "feedback") and "feedback_count".
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catdog.ingest import ImageRecord, IngestResult
from catdog.preprocessing import image_to_pixels

SPLITS = ("train", "validation", "test")
METADATA_NAME = "dataset.json"
SHARD_SIZE = 512


@dataclass(frozen=True)
class SplitRatios:
    train: float
    validation: float
    test: float


def _stratified(records: list[ImageRecord], fractions: dict[str, float], seed: int) -> dict[str, list[ImageRecord]]:
    """Per class: order by content hash, shuffle with a seeded RNG, cut by the fractions."""
    out = {name: [] for name in fractions}
    labels = sorted({r.label for r in records})
    for label in labels:
        members = sorted((r for r in records if r.label == label), key=lambda r: r.sha256)
        random.Random(f"{seed}:{label}").shuffle(members)
        n = len(members)
        names = list(fractions)
        cuts = {}
        for name in names[1:]:  # the first split takes the remainder, so it is never short
            cuts[name] = round(n * fractions[name])
        first = n - sum(cuts.values())
        out[names[0]] += members[:first]
        start = first
        for name in names[1:]:
            out[name] += members[start:start + cuts[name]]
            start += cuts[name]
    return out


def feedback_split(sha256: str, ratios: SplitRatios, seed: int) -> str:
    """The split of one feedback photo: a uniform draw in [0, 1) from sha256(seed:sha256), cut at
    the ratios. It depends on nothing else, so it never changes as more photos arrive."""
    draw = int.from_bytes(hashlib.sha256(f"{seed}:{sha256}".encode()).digest()[:8], "big") / 2**64
    if draw < ratios.train:
        return "train"
    return "validation" if draw < ratios.train + ratios.validation else "test"


def _split_data(
    images: list[ImageRecord], layout: str, ratios: SplitRatios, seed: int
) -> tuple[dict[str, list[ImageRecord]], str]:
    """The data's own photos (no feedback): {split: records} and the policy sentence."""
    if layout == "train_validation":
        held_out = [r for r in images if r.source_split == "validation"]
        pool = [r for r in images if r.source_split == "train"]
        val_fraction = ratios.validation / (ratios.train + ratios.validation)
        parts = _stratified(pool, {"train": 1 - val_fraction, "validation": val_fraction}, seed)
        parts["test"] = sorted(held_out, key=lambda r: r.sha256)
        policy = (
            "The source has its own train/ and validation/ folders: its validation/ folder is the "
            "held-out test split (never used for training or early stopping); train/ is split "
            f"stratified by class into train and validation {1 - val_fraction:.3f}/{val_fraction:.3f} "
            f"(seed {seed})."
        )
    else:
        parts = _stratified(images, {"train": ratios.train, "validation": ratios.validation, "test": ratios.test}, seed)
        policy = (
            f"Stratified by class into train/validation/test {ratios.train}/{ratios.validation}/"
            f"{ratios.test} (seed {seed}; order fixed by content hash, so independent of file names)."
        )
    return parts, policy


def split_dataset(result: IngestResult, ratios: SplitRatios, seed: int) -> tuple[dict[str, list[ImageRecord]], str]:
    """Return {split: records} and a sentence saying how the split was formed.

    The data's photos are split as if there were no feedback; feedback photos follow, each in the
    split feedback_split() gives it (in sha256 order).
    """
    parts, policy = _split_data([r for r in result.images if r.origin == "data"], result.layout, ratios, seed)
    feedback = sorted((r for r in result.images if r.origin == "feedback"), key=lambda r: r.sha256)
    for rec in feedback:
        parts[feedback_split(rec.sha256, ratios, seed)].append(rec)
    if feedback:
        policy += (
            f" The {len(feedback)} feedback photo(s) are assigned one by one by a hash of (seed, sha256) to "
            f"train/validation/test with probabilities {ratios.train}/{ratios.validation}/{ratios.test}, so a "
            "feedback photo's split never changes as more feedback arrives (one in test never trains a later "
            "model) and the data's photos are split as without feedback."
        )
    empty = [f"{s}/{c}" for s in SPLITS for c in result.class_names if not any(r.label == c for r in parts[s])]
    if empty:
        raise ValueError(f"split leaves no image in {empty}: add images or change the split ratios")
    return parts, policy


def _example(pixels: np.ndarray, label: int, sha256: str):
    import tensorflow as tf

    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[pixels.tobytes()])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "sha256": tf.train.Feature(bytes_list=tf.train.BytesList(value=[sha256.encode()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_dataset(
    result: IngestResult,
    ingest_dir: Path,
    output_dir: Path,
    ratios: SplitRatios,
    image_size: int,
    seed: int,
    max_pixels: int,
) -> dict:
    """Split, decode + resize each image once, and write shards plus dataset.json; returns the metadata."""
    import tensorflow as tf

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    parts, policy = split_dataset(result, ratios, seed)
    index = {name: i for i, name in enumerate(result.class_names)}
    splits = {}
    for split in SPLITS:
        records = parts[split]
        n_shards = max(1, math.ceil(len(records) / SHARD_SIZE))
        shards = [f"{split}-{i:05d}-of-{n_shards:05d}.tfrecord" for i in range(n_shards)]
        for i, shard in enumerate(shards):
            with tf.io.TFRecordWriter(str(output_dir / shard)) as writer:
                for rec in records[i * SHARD_SIZE:(i + 1) * SHARD_SIZE]:
                    pixels = image_to_pixels((Path(ingest_dir) / rec.file).read_bytes(), image_size, max_pixels)
                    writer.write(_example(pixels, index[rec.label], rec.sha256))
        splits[split] = {
            "count": len(records),
            "class_counts": {c: sum(r.label == c for r in records) for c in result.class_names},
            "shards": shards,
            "sha256": [r.sha256 for r in records],
            "origins": [r.origin for r in records],
            "feedback_count": sum(r.origin == "feedback" for r in records),
        }
    metadata = {
        "class_names": result.class_names,
        "image_size": image_size,
        "seed": seed,
        "split_policy": policy,
        "fingerprint": result.fingerprint,
        "splits": splits,
    }
    (output_dir / METADATA_NAME).write_text(json.dumps(metadata, indent=1))
    return metadata


def load_metadata(dataset_dir: Path) -> dict:
    return json.loads((Path(dataset_dir) / METADATA_NAME).read_text())


def split_origins(metadata: dict, split: str) -> list[str]:
    """The origin of each photo of a split, in file order; a dataset.json written before feedback
    existed has no "origins": all its photos are the data's."""
    info = metadata["splits"][split]
    return info.get("origins", ["data"] * info["count"])


def load_split(dataset_dir: Path, split: str):
    """An unbatched tf.data.Dataset of (float32 pixels [0, 255], int32 label)."""
    import tensorflow as tf

    metadata = load_metadata(dataset_dir)
    size = metadata["image_size"]
    files = [str(Path(dataset_dir) / s) for s in metadata["splits"][split]["shards"]]
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
    }

    def parse(serialized):
        example = tf.io.parse_single_example(serialized, spec)
        pixels = tf.reshape(tf.io.decode_raw(example["image"], tf.uint8), (size, size, 3))
        return tf.cast(pixels, tf.float32), tf.cast(example["label"], tf.int32)

    return tf.data.TFRecordDataset(files).map(parse, num_parallel_calls=tf.data.AUTOTUNE)


def load_split_arrays(dataset_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The whole split as (float32 images, int labels) NumPy arrays, in file order."""
    images, labels = [], []
    for x, y in load_split(dataset_dir, split).batch(256).as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)
