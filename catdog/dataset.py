"""Preprocess: a seeded stratified split, decode + resize once, TFRecord shards for tf.data.

Format: TFRecord shards of the photos already decoded and resized (by catdog.preprocessing, the
same code the server runs), stored as JPEG at quality JPEG_QUALITY: about 0.8x the size of the
source JPEGs (raw pixels were 5x: 196 KB a photo at 256 px), for a mean error of 1.8 of 255
levels. Training streams the shards (tf.data decodes a 256 px JPEG in well under a millisecond,
a small fraction of a training step) with a bounded shuffle buffer of the encoded records, so
its memory does not grow with the number of photos. TFRecord is tf.data's native, streamable
format (it reads straight from gs:// on Vertex), and shards let tf.data interleave reads. The
decode-resize-encode work runs in a process pool over every core; the shards are byte-identical
to one process's. Evaluation reads the test photos from the ingested files (catdog/evaluation).

Split: the data's photos are split stratified by class (or by the source's own folders) exactly as
when there is no feedback; each feedback photo goes to train/validation/test by a hash of
(seed, sha256), so its split never changes as more feedback arrives (see split_dataset).

dataset.json: per split, "count", "class_counts", "shards", "sha256" (the photos in file order),
"origins" (parallel to "sha256": "data" or "feedback") and "feedback_count".

features.npz (save_split_features; the train step's `features` artifact, read by the label-issues
step): pooled features of the train and validation photos in file order, with labels and sha256.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import multiprocessing
import os
import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from catdog.ingest import ImageRecord, IngestResult
from catdog.preprocessing import image_to_pixels

SPLITS = ("train", "validation", "test")
METADATA_NAME = "dataset.json"
SHARD_SIZE = 512
JPEG_QUALITY = 90
SHUFFLE_BUFFER = 8192  # encoded records (~18 KB each at 256 px): ~150 MB at most, whatever the data size


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


def _example(jpeg: bytes, label: int, sha256: str):
    import tensorflow as tf

    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "sha256": tf.train.Feature(bytes_list=tf.train.BytesList(value=[sha256.encode()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def encode_resized(path: Path, image_size: int, max_pixels: int) -> bytes:
    """One photo decoded and resized by catdog.preprocessing, as JPEG_QUALITY JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image_to_pixels(Path(path).read_bytes(), image_size, max_pixels)).save(
        buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def write_dataset(
    result: IngestResult,
    ingest_dir: Path,
    output_dir: Path,
    ratios: SplitRatios,
    image_size: int,
    seed: int,
    max_pixels: int,
    workers: int | None = None,
) -> dict:
    """Split, decode + resize + encode each image once (`workers` processes, default one per
    core), and write shards plus dataset.json; returns the metadata."""
    import tensorflow as tf

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    parts, policy = split_dataset(result, ratios, seed)
    index = {name: i for i, name in enumerate(result.class_names)}
    encode = partial(encode_resized, image_size=image_size, max_pixels=max_pixels)
    splits = {}
    # spawned, not forked: this process has TensorFlow loaded (its threads and locks do not fork)
    with ProcessPoolExecutor(workers or os.cpu_count() or 1, mp_context=multiprocessing.get_context("spawn")) as pool:
        for split in SPLITS:
            records = parts[split]
            n_shards = max(1, math.ceil(len(records) / SHARD_SIZE))
            shards = [f"{split}-{i:05d}-of-{n_shards:05d}.tfrecord" for i in range(n_shards)]
            for i, shard in enumerate(shards):
                chunk = records[i * SHARD_SIZE:(i + 1) * SHARD_SIZE]
                encoded = pool.map(encode, [Path(ingest_dir) / rec.file for rec in chunk], chunksize=16)
                with tf.io.TFRecordWriter(str(output_dir / shard)) as writer:
                    for rec, jpeg in zip(chunk, encoded):  # map keeps the order: same shards as one process
                        writer.write(_example(jpeg, index[rec.label], rec.sha256))
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
        "encoding": f"jpeg, quality {JPEG_QUALITY}",
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


def load_split(dataset_dir: Path, split: str, shuffle_seed: int | None = None):
    """An unbatched tf.data.Dataset of (float32 pixels [0, 255], int32 label), streamed from the
    shards. With shuffle_seed: shards in a seeded order, interleaved, and a seeded shuffle of the
    encoded records (at most SHUFFLE_BUFFER of them held), reshuffled each epoch."""
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
        pixels = tf.ensure_shape(tf.io.decode_jpeg(example["image"], channels=3), (size, size, 3))
        return tf.cast(pixels, tf.float32), tf.cast(example["label"], tf.int32)

    count = metadata["splits"][split]["count"]
    if shuffle_seed is None:
        records = tf.data.TFRecordDataset(files)
    else:
        records = (tf.data.Dataset.from_tensor_slices(files)
                   .shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=True)
                   .interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)))
                   .shuffle(min(count, SHUFFLE_BUFFER), seed=shuffle_seed, reshuffle_each_iteration=True))
    # The known length lets Keras show progress and spares its "ran out of data" warning after the
    # first epoch; reading a different number of records than dataset.json says is an error.
    return records.map(parse, num_parallel_calls=tf.data.AUTOTUNE).apply(tf.data.experimental.assert_cardinality(count))


def split_features(extractor, dataset_dir: Path, split: str, batch_size: int, mirrored: bool = False,
                   on_batch=None) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) of a split's photos through `extractor` (a Keras model, a batch at a
    time), with their mirror images too when `mirrored`; on_batch(n) after each n photos.
    ValueError for an empty split."""
    features, labels = [], []
    for x, y in load_split(dataset_dir, split).batch(batch_size).as_numpy_iterator():
        for images in ([x, x[:, :, ::-1]] if mirrored else [x]):
            features.append(extractor.predict_on_batch(images))
            labels.append(y)
            if on_batch is not None:
                on_batch(len(y))
    if not features:
        raise ValueError(f"the {split} split of {dataset_dir} is empty")
    return np.concatenate(features), np.concatenate(labels)


FEATURES_NAME = "features.npz"


def original_rows(count: int, batch_size: int, mirrored: bool) -> np.ndarray:
    """The rows of split_features' output that hold the photos themselves, in file order: with
    `mirrored` each batch of b photos gives b rows of them, then b rows of their mirror images."""
    if not mirrored:
        return np.arange(count)
    return np.concatenate([np.arange(start, min(start + batch_size, count)) + start
                           for start in range(0, count, batch_size)])


def save_split_features(output_dir: Path, dataset_dir: Path, features: dict[str, tuple[np.ndarray, np.ndarray]],
                        extractor: str) -> Path:
    """Write <output_dir>/features.npz: per split of `features` ({split: (features, labels)}, file
    order), "<split>_features" (float32), "<split>_labels" and "<split>_sha256" (dataset.json's), plus
    "class_names" and "extractor" (what computed them). ValueError when a split's count differs."""
    metadata = load_metadata(dataset_dir)
    arrays = {"class_names": np.array(metadata["class_names"]), "extractor": np.array(extractor)}
    for split, (x, y) in features.items():
        shas = metadata["splits"][split]["sha256"]
        if len(x) != len(shas) or len(y) != len(shas):
            raise ValueError(f"{len(x)} {split} features for {len(shas)} {split} photos")
        arrays |= {f"{split}_features": np.asarray(x, np.float32), f"{split}_labels": np.asarray(y, np.int64),
                   f"{split}_sha256": np.array(shas)}
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    path = Path(output_dir) / FEATURES_NAME
    np.savez(path, **arrays)
    return path


def load_split_features(features_dir: Path) -> dict:
    """features.npz as a dict of arrays (save_split_features)."""
    with np.load(Path(features_dir) / FEATURES_NAME) as data:
        return {key: data[key] for key in data.files}
