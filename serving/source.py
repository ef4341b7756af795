"""Where the served model comes from: a model folder, a gs:// model folder, or a registry version
or the champion alias; and what one loaded version is. Light to import (no KServe, no TensorFlow),
so the server checks its --model before it pays for importing KServe.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from catdog import storage
from catdog.model_files import METADATA_FILE, ONNX_FILE, load_metadata, serving_files
from catdog.onnx_predictor import OnnxPredictor, load_checked
from catdog.registry import CHAMPION_ALIAS, ModelRegistry, RegistryError


def available_cpus() -> int:
    """CPUs this process may use: affinity, capped by a cgroup v2 CPU quota (containers)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class LoadedModel:
    """One loaded model version; requests take a reference, reloads swap in a new one."""

    predictor: OnnxPredictor
    version: str
    source: str
    model_dir: Path
    loaded_at: str
    gradcam_grid: tuple[int, int] | None = None  # (h, w) of its Grad-CAM maps; None: an export without them

    @property
    def class_names(self) -> list[str]:
        return self.predictor.class_names

    @property
    def image_size(self) -> int:
        return self.predictor.image_size


class ModelSource:
    """A model reference: a model folder, a gs:// model folder, 'champion' or a version number.

    'champion' and version numbers are looked up in `registry_uri` (a folder or gs:// prefix).
    """

    def __init__(self, ref: str, registry_uri: str | None = None):
        self.ref = str(ref)
        self.registry_uri = registry_uri
        if storage.is_gcs(self.ref):
            self.kind = "gcs-dir"
        elif Path(self.ref).is_dir():
            self.kind = "dir"
        elif self.ref == CHAMPION_ALIAS or self.ref.isdigit():
            if not registry_uri:
                raise RegistryError(f"model {self.ref!r} needs a registry (--registry)")
            self.kind = "registry"
            self.registry = ModelRegistry(registry_uri)
        else:
            raise FileNotFoundError(
                f"model {self.ref!r} is not a model folder, a gs:// folder, '{CHAMPION_ALIAS}' or a version number"
            )

    @property
    def follows_champion(self) -> bool:
        return self.kind == "registry" and self.ref == CHAMPION_ALIAS

    def describe(self) -> str:
        if self.kind == "registry":
            return f"{self.registry.uri} {self.ref}"
        return self.ref

    def wanted_version(self) -> str | None:
        """The version the reference names now (reads the alias when following the champion)."""
        if self.kind != "registry":
            return None
        if self.follows_champion:
            version = self.registry.champion_version()
            return None if version is None else str(version)
        return self.ref

    def load(self, intra_op_threads: int = 1) -> LoadedModel:
        """Resolve, fetch, open with ONNX Runtime and check with one warm-up prediction."""
        if self.kind == "registry":
            version = self.registry.resolve(self.ref)
            model_dir = self.registry.fetch(version)
            source = f"{self.registry.uri} v{version}"
        elif self.kind == "dir":
            model_dir, source = Path(self.ref), self.ref
        else:
            model_dir, source = self._download(), self.ref
        try:
            predictor = load_checked(model_dir, intra_op_threads)  # also the warm-up prediction
            grid = gradcam_grid(predictor)
        except ValueError:
            if self.kind == "gcs-dir":  # our own download: nothing will use it
                shutil.rmtree(model_dir, ignore_errors=True)
            raise
        label = str(version) if self.kind == "registry" else content_version(model_dir)
        return LoadedModel(predictor, label, source, Path(model_dir), _now(), grid)

    def _download(self) -> Path:
        """The files serving reads (catdog.model_files.serving_files, not model.keras) of a gs:// model
        folder, into a new folder."""
        local = Path(tempfile.mkdtemp(prefix="catdog-model-"))
        (local / METADATA_FILE).write_bytes(storage.read_bytes(storage.join(self.ref, METADATA_FILE)))
        for name in serving_files(load_metadata(local)):
            if name != METADATA_FILE:
                (local / name).write_bytes(storage.read_bytes(storage.join(self.ref, name)))
        return local


def gradcam_grid(predictor: OnnxPredictor) -> tuple[int, int] | None:
    """(h, w) of the model's Grad-CAM maps, from one explanation of a grey image (a warm-up that also
    checks their shape); None for a model exported without the gradcam output. Raises ValueError."""
    if not predictor.has_gradcam:
        return None
    size, classes = predictor.image_size, len(predictor.class_names)
    try:
        _, maps = predictor.explain_pixels(np.full((1, size, size, 3), 127, np.uint8))
    except Exception as exc:  # a corrupt gradcam branch: the model is not served
        raise ValueError(f"the model in {predictor.model_dir} does not explain: {type(exc).__name__}: {exc}") from exc
    if maps.ndim != 4 or maps.shape[0] != 1 or maps.shape[3] != classes:
        raise ValueError(f"the model in {predictor.model_dir} gives Grad-CAM maps of shape {maps.shape} for one "
                         f"image: they should be (1, h, w, {classes})")
    return int(maps.shape[1]), int(maps.shape[2])


def content_version(model_dir: Path) -> str:
    """A version label for a bare model folder: a prefix of model.onnx's SHA-256."""
    digest = hashlib.sha256((Path(model_dir) / ONNX_FILE).read_bytes()).hexdigest()
    return f"sha256-{digest[:12]}"
