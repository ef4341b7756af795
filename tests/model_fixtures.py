"""Helpers for the model, training, registry, champion and evaluation tests.

- ``make_dataset(root, counts, seed, ...)``: synthetic class folders run through the REAL ingest
  and preprocess code (catdog.ingest.ingest_dataset + catdog.dataset.write_dataset) at 32 px;
  returns a ``BuiltDataset`` (source, ingest_dir, dataset_dir, ingest result, dataset metadata).
- ``train_params(**changes)``: a complete TrainParams (it has no defaults) for a tiny, fast run.
- ``labelled_folder(root, counts, bad=...)``: class folders plus optional unreadable files.
- ``load_split_arrays(dataset_dir, split)``: a written split as (float32 pixels, int labels) arrays.
- ``FailAfter``: a callable wrapper that lets the first N calls through and then raises, to
  simulate a crash halfway through a multi-file copy.

Models: reuse tests.serving_fixtures.tiny_model_dir() (built once per process) wherever a real
model folder is needed; its outputs depend on the image.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import make_class_folders

TINY = 32
RATIOS = (0.5, 0.25, 0.25)


@dataclass(frozen=True)
class BuiltDataset:
    source: Path
    ingest_dir: Path
    dataset_dir: Path
    result: object  # catdog.ingest.IngestResult
    metadata: dict


def make_dataset(root: Path, counts: dict[str, int] | None = None, seed: int = 0, ratios=RATIOS,
                 image_size: int = TINY, source: Path | None = None) -> BuiltDataset:
    from catdog.dataset import SplitRatios, write_dataset
    from catdog.ingest import ingest_dataset

    root = Path(root)
    source = source or make_class_folders(root / "data", counts or {"cat": 6, "dog": 6})
    ingest_dir, dataset_dir = root / "ingested", root / "dataset"
    result = ingest_dataset(str(source), ingest_dir, cache_dir=root / "cache")
    metadata = write_dataset(result, ingest_dir, dataset_dir, SplitRatios(*ratios), image_size, seed, 10**6)
    return BuiltDataset(source, ingest_dir, dataset_dir, result, metadata)


def train_params(**changes):
    from catdog.train import TrainParams

    values = dict(
        backbone_alpha=0.35, weights="none", augmentations="flip", batch_size=8,
        frozen_epochs=1, finetune_epochs=1, learning_rate=1e-3, finetune_learning_rate=1e-4,
        finetune_layers=5, finetune_ema_momentum=0.0,
        finetune_lr_schedule="plateau", label_smoothing=0.0,
        finetune_image_scale=1.0, dropout=0.1, early_stopping_patience=2, seed=7,
        test_time_flip=True, test_time_crop=1.0,
    )
    values.update(changes)
    return TrainParams(**values)


def labelled_folder(root: Path, counts: dict[str, int] | None = None, bad: bool = False, seed: int = 5) -> Path:
    """Class folders of JPEGs; with bad=True also a zero-byte file and a text file named .jpg."""
    root = make_class_folders(Path(root), counts or {"cat": 4, "dog": 4}, seed=seed)
    if bad:
        (root / "dog" / "empty.jpg").write_bytes(b"")
        (root / "cat" / "notes.jpg").write_text("this is not an image\n")
    return root


class FailAfter:
    """Wrap `func`: the first `n_ok` calls go through, every later call raises `error`."""

    def __init__(self, func, n_ok: int, error: Exception | None = None):
        self.func, self.n_ok = func, n_ok
        self.error = error or OSError(28, "No space left on device (simulated)")
        self.calls = 0

    def __get__(self, instance, owner=None):  # also works when set as a method on a class
        return self if instance is None else functools.partial(self, instance)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls > self.n_ok:
            raise self.error
        return self.func(*args, **kwargs)


def load_split_arrays(dataset_dir: Path, split: str):
    """The whole split as (float32 images, int labels) NumPy arrays, in file order (it holds every
    photo's pixels: test splits only)."""
    import numpy as np

    from catdog.dataset import load_split

    images, labels = [], []
    for x, y in load_split(dataset_dir, split).batch(256).as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)
