"""Fixtures and helpers for the serving tests (tests/serving/).

- ``tiny_model_dir()``: a real model folder (model.keras, model.onnx, metadata.json) of a tiny
  MobileNetV2 (32 px, random weights), built and exported ONCE per test process (about 4 s) and
  shared read-only; the fixture ``tiny_model`` returns it.
- ``tiny_ood_model_dir()``: the same kind of tiny model, flip-averaged, with the "neither" score
  (catdog.ood) fitted on tinted-noise photos (``photo``): ``ood_photo`` images (stripes, text,
  checkerboards) score far above its threshold. Built once per process; fixture ``tiny_ood_model``.
- ``champion_registry``: a fresh registry under tmp_path whose champion is version 1 = that model.
- ``run_server(model, **app_options)``: our app served by uvicorn on 127.0.0.1, a free port, in a
  thread; yields a ``RunningServer`` (``.url``, ``.model``, ``.get/.post``); stops on exit.
- ``v1_json`` / ``v2_json``: request bodies; ``metric_value``: read a sample from /metrics text.

Everything is synthetic (tests.helpers images); nothing reads ../shared.
"""

from __future__ import annotations

import atexit
import base64
import json
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.helpers import image_bytes, uvicorn_in_thread

TINY_SIZE = 32
_cache: dict[str, Path] = {}


def _tiny_model(prefix: str):
    """(a fresh temporary folder removed at exit, the seeded tiny model whose outputs depend on the image)."""
    import keras

    from catdog.model import build_model

    root = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, root, True)
    keras.utils.set_random_seed(0)
    model = build_model(2, TINY_SIZE, 0.35, "none", 0.0)
    _make_outputs_depend_on_the_image(model)
    return root, model


def _save_tiny(model, root: Path, architecture: str) -> Path:
    from catdog.model import save_model_dir
    from catdog.preprocessing import PREPROCESSING_SPEC

    return save_model_dir(model, root / "model", {"class_names": ["cat", "dog"], "image_size": TINY_SIZE,
                                                  "preprocessing": PREPROCESSING_SPEC, "architecture": architecture})


def tiny_model_dir() -> Path:
    """Build + export the tiny model once per process; later calls return the same folder."""
    if "dir" not in _cache:
        root, model = _tiny_model("catdog-serving-tests-")
        _cache["dir"] = _save_tiny(model, root, "tiny MobileNetV2 for tests")
    return _cache["dir"]


def tiny_ood_model_dir() -> Path:
    """See the module docstring: features of 240 tinted-noise photos fit the statistics (k = 32),
    120 more the threshold. Its random backbone tells them from ood_photo()s imperfectly (AUROC
    about 0.95, tests/catdog/test_ood.py), so tests check the score's mechanics and a clear majority."""
    if "ood" not in _cache:
        import numpy as np

        from catdog.model import pooled_features_model, with_flip_averaging
        from catdog.ood import ood_layer
        from catdog.preprocessing import image_to_pixels

        root, model = _tiny_model("catdog-ood-tests-")
        features = pooled_features_model(model, flip=True)
        pixels = np.stack([image_to_pixels(photo(i, size=(64 + i % 5, 48)), TINY_SIZE) for i in range(360)])
        x = features.predict(pixels.astype(np.float32), verbose=0)
        labels = np.arange(360) % 2  # photo(): odd seeds are red-tinted, even ones blue-tinted
        layer = ood_layer(x[:240], labels[:240], x[240:], 2, components=32, features="pooled_features (tests)")
        _cache["ood"] = _save_tiny(with_flip_averaging(model, layer), root,
                                   "tiny MobileNetV2 with the neither score, for tests")
    return _cache["ood"]


def ood_photo(seed: int = 0, size=(64, 48)) -> bytes:
    """A JPEG nothing like photo(): black and white stripes, a checkerboard or a text render."""
    import io

    import numpy as np
    from PIL import Image, ImageDraw

    width, height = size
    kind = seed % 3
    if kind == 0:
        pixels = np.where((np.arange(width)[None, :] // (2 + seed % 4)) % 2 == 0, 255, 0).repeat(height, axis=0)
    elif kind == 1:
        cell = 4 + seed % 5
        pixels = (((np.arange(height)[:, None] // cell) + (np.arange(width)[None, :] // cell)) % 2) * 255
    else:
        image = Image.new("L", size, 255)
        ImageDraw.Draw(image).text((2, 2 + seed % 7), f"neither {seed}\ncat nor dog", fill=0)
        pixels = np.asarray(image)
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8)).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def tiny_ood_model() -> Path:
    return tiny_ood_model_dir()


def _make_outputs_depend_on_the_image(model) -> None:
    """A randomly initialised MobileNetV2 at 32 px answers ~[0.5, 0.5] for every image (the signal
    vanishes through the layers), which would make label checks vacuous. Smaller BatchNorm
    variances keep the signal alive; centring the head's bias splits synthetic photos between
    both labels."""
    import numpy as np

    from catdog.preprocessing import image_to_pixels

    weights = [np.full_like(w.numpy(), 0.1) if "moving_variance" in w.path else w.numpy() for w in model.weights]
    model.set_weights(weights)
    pixels = np.stack([image_to_pixels(photo(i, size=(64 + 7 * i, 48)), TINY_SIZE) for i in range(16)])
    probabilities = model.predict(pixels.astype(np.float32), verbose=0)
    logit_gap = np.log(probabilities[:, 1]) - np.log(probabilities[:, 0])
    head = model.get_layer("probabilities")
    kernel, bias = head.get_weights()
    head.set_weights([kernel, bias + np.array([0.0, -float(np.median(logit_gap))], dtype=bias.dtype)])


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return tiny_model_dir()


@pytest.fixture
def champion_registry(tmp_path, tiny_model):
    """A registry with version 1 (the tiny model) as its champion."""
    from catdog.registry import ModelRegistry

    registry = ModelRegistry(tmp_path / "registry")
    registry.set_champion(registry.register(tiny_model))
    return registry


def variant_of(model_dir: Path, target: Path, **metadata_changes) -> Path:
    """A copy of a model folder with metadata.json fields changed (a distinguishable 'new' version)."""
    shutil.copytree(model_dir, target)
    metadata = json.loads((target / "metadata.json").read_text())
    (target / "metadata.json").write_text(json.dumps({**metadata, **metadata_changes}))
    return target


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def v1_json(*images: bytes) -> dict:
    return {"instances": [{"image_bytes": {"b64": b64(i)}} for i in images]}


def v2_json(*images: bytes, request_id: str | None = None, shape: list[int] | None = None) -> dict:
    body = {"inputs": [{"name": "image_bytes", "shape": shape or [len(images)], "datatype": "BYTES",
                        "data": [b64(i) for i in images]}]}
    if request_id is not None:
        body["id"] = request_id
    return body


def photo(seed: int = 0, fmt: str = "JPEG", size=(64, 48), mode: str = "RGB") -> bytes:
    return image_bytes(fmt, size, mode, seed=seed, color=(200, 60, 40) if seed % 2 else (40, 90, 200))


def metric_value(text: str, name: str, **labels) -> float:
    """The value of one sample in Prometheus text (0.0 when absent); labels must all match."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(\{{(.*)\}})? (\S+)$", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == str(v) for k, v in labels.items()):
            total += float(match.group(3))
    return total


@dataclass
class RunningServer:
    url: str
    model: object
    app: object

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, timeout=kwargs.pop("timeout", 30), **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.url + path, timeout=kwargs.pop("timeout", 30), **kwargs)

    def predict(self, *images: bytes) -> requests.Response:
        return self.post("/v1/models/catdog:predict", json=v1_json(*images))

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get("/v2/health/ready").status_code == 200:
                return
            time.sleep(0.05)
        raise AssertionError(f"server at {self.url} not ready after {timeout} s")


@contextmanager
def run_server(model, wait_ready: bool = True, **app_options):
    """Serve create_app(model, **app_options) with uvicorn on 127.0.0.1:<free port> in a thread."""
    from serving.app import create_app

    app = create_app(model, **app_options)
    model.start()
    try:
        with uvicorn_in_thread(app, lifespan="off") as url:
            running = RunningServer(url, model, app)
            if wait_ready:
                running.wait_ready()
            yield running
    finally:
        model.stop()


def make_model(ref, registry_uri=None, **options):
    from serving.kserve_model import CatDogModel, ModelSource

    options.setdefault("inference_threads", 2)
    return CatDogModel(ModelSource(str(ref), None if registry_uri is None else str(registry_uri)), **options)
