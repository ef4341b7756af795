"""CatDogModel: the kserve.Model that serves the classifier's ONNX export.

Request flow (KServe's Model.__call__): preprocess -> predict -> postprocess.
- preprocess parses a V1/Vertex body ({"instances": [{"image_bytes": {"b64": ...}}, ...]}) or a V2
  InferRequest (one BYTES tensor of base64-encoded images) into raw image bytes; every problem is
  an InvalidInput (HTTP 400) naming the instance and what was wrong.
- predict decodes the images with the shared preprocessing (catdog.preprocessing, through
  catdog.predictor.OnnxPredictor) and runs them as ONE ONNX Runtime batch, on a small thread pool
  so the event loop keeps accepting requests; ONNX Runtime uses one intra-op thread per call.
- postprocess shapes the answer: V1 {"predictions": [{"label", "probabilities"}]}, V2 label and
  probabilities tensors with a response id and the model version.

Loading: a model folder, a gs:// model folder, or a registry version / the champion alias. When
following the champion, a watcher thread re-reads the alias every `reload_interval` seconds and
swaps in a new version only after it loaded and answered a warm-up prediction, so requests never
see a gap; a version that fails to load is logged and skipped, the old one keeps serving.

No TensorFlow anywhere on this path (see tests/test_serving_cli.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

_argv, sys.argv = sys.argv, sys.argv[:1]
try:  # kserve.model_server parses sys.argv when imported: keep our own flags away from it
    import kserve
finally:
    sys.argv = _argv
from kserve.errors import InvalidInput, ModelNotReady  # noqa: E402
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse  # noqa: E402

from catdog.preprocessing import DEFAULT_MAX_PIXELS, InvalidImageError  # noqa: E402
from serving import metrics  # noqa: E402
from serving.source import LoadedModel, ModelSource, available_cpus, content_version  # noqa: E402,F401 (re-exported)

logger = logging.getLogger("catdog.serving")

DEFAULT_MODEL_NAME = "catdog"
DEFAULT_MAX_INSTANCES = 32
DEFAULT_RELOAD_INTERVAL = 5.0
RETRY_FAILED_AFTER = 60.0  # seconds before a champion version that failed to load is tried again
EXPLAIN_GRID = 8  # occlusion saliency: the image is split into EXPLAIN_GRID x EXPLAIN_GRID patches
MAX_EXPLAIN_INSTANCES = 4  # each explained image costs EXPLAIN_GRID**2 + 1 inferences
V2_INPUT_NAME = "image_bytes"
V1_FORMAT_HINT = '{"instances": [{"image_bytes": {"b64": "<base64 JPEG/PNG/WebP>"}}, ...]}'


# -- requests -------------------------------------------------------------------------------------
@dataclass
class Batch:
    images: list[bytes]
    where: list[str]  # how to name each image in an error message
    protocol: str  # "v1" (also Vertex) or "v2"
    request: InferRequest | None = None


@dataclass
class Result:
    batch: Batch
    probabilities: np.ndarray
    model: LoadedModel
    extra: dict = field(default_factory=dict)


def decode_base64(text: Any, where: str) -> bytes:
    """Standard or URL-safe base64, with or without padding or line breaks; else InvalidInput."""
    if not isinstance(text, str):
        raise InvalidInput(f"{where}: expected a base64 string, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    cleaned = "".join(text.split()).replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{where}: invalid base64 ({exc})") from None


def _v1_instance_image(instance: Any, where: str) -> bytes:
    if isinstance(instance, dict):
        value = instance.get("image_bytes", instance)
        if isinstance(value, dict) and "b64" in value:
            return decode_base64(value["b64"], f"{where}.image_bytes.b64" if "image_bytes" in instance else f"{where}.b64")
        if "image_bytes" in instance:
            raise InvalidInput(f'{where}.image_bytes: expected {{"b64": "<base64>"}}')
    raise InvalidInput(f"{where}: expected an object with image_bytes.b64, e.g. {V1_FORMAT_HINT}")


def _log_odds(p):
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def _flatten(data: Any) -> list:
    if isinstance(data, (list, tuple)):
        return [item for element in data for item in _flatten(element)]
    return [data]


class CatDogModel(kserve.Model):
    """Serves one model version at a time; see the module docstring."""

    def __init__(
        self,
        source: ModelSource,
        name: str = DEFAULT_MODEL_NAME,
        max_instances: int = DEFAULT_MAX_INSTANCES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        inference_threads: int | None = None,
        reload_interval: float = DEFAULT_RELOAD_INTERVAL,
    ):
        super().__init__(name, return_response_headers=True)
        self.source = source
        self.max_instances = int(max_instances)
        self.max_pixels = int(max_pixels)
        self.inference_threads = int(inference_threads or available_cpus())
        self.reload_interval = float(reload_interval)
        self._executor = ThreadPoolExecutor(self.inference_threads, thread_name_prefix="catdog-infer")
        # explanations (up to MAX_EXPLAIN_INSTANCES x (EXPLAIN_GRID**2 + 1) inferences) get their own
        # thread: the OS time-slices one against predictions instead of queueing predictions behind it
        self._explain_executor = ThreadPoolExecutor(1, thread_name_prefix="catdog-explain")
        self._current: LoadedModel | None = None
        self._load_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._failed_version: str | None = None
        self._failed_at = 0.0
        self.last_error: str | None = None

    # -- loading --------------------------------------------------------------------------------
    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def load(self) -> bool:
        """Load the model now (KServe's contract); a no-op once a version is loaded."""
        if self._current is None and self._load_lock.acquire(blocking=False):
            try:
                self._load_and_swap(None)
            finally:
                self._load_lock.release()
        return self.ready

    def start(self) -> None:
        """Load (and follow the champion) on a background thread; readiness stays 503 until loaded."""
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="catdog-model-watcher", daemon=True)
            self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        self.ready = False
        if self._current is not None:
            try:
                metrics.MODEL_INFO.remove(self.name, self._current.version, self._current.source)
            except KeyError:
                pass
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._explain_executor.shutdown(wait=False, cancel_futures=True)

    def _load_and_swap(self, expected_version: str | None) -> bool:
        try:
            loaded = self.source.load(intra_op_threads=1)
        except Exception as exc:  # a bad model must never take the serving one down
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._failed_version, self._failed_at = expected_version, time.monotonic()
            metrics.MODEL_LOADS.labels(self.name, "failure").inc()
            logger.error("could not load %s: %s", self.source.describe(), self.last_error)
            return False
        previous, self._current = self._current, loaded
        self.ready = True
        self.last_error = None
        self._failed_version = None
        metrics.MODEL_LOADS.labels(self.name, "success").inc()
        metrics.MODEL_INFO.labels(self.name, loaded.version, loaded.source).set(1)
        if previous is not None and (previous.version, previous.source) != (loaded.version, loaded.source):
            try:
                metrics.MODEL_INFO.remove(self.name, previous.version, previous.source)
            except KeyError:
                pass
        logger.info(
            "serving %s as %r version %s (%d px, classes %s)%s",
            loaded.source, self.name, loaded.version, loaded.image_size, loaded.class_names,
            f"; was version {previous.version}" if previous else "",
        )
        return True

    def _watch(self) -> None:
        """Initial load, then (following the champion) reload whenever the alias names a new version."""
        waiting_logged = False
        delay = self.reload_interval if self.reload_interval > 0 else 10.0
        while not self._stop.is_set():
            if self.source.follows_champion:
                try:
                    wanted = self.source.wanted_version()
                except Exception as exc:  # unreadable alias (e.g. a transient storage error): next time
                    logger.warning("could not read the champion alias of %s: %s", self.source.describe(), exc)
                    wanted = None
                current = self._current.version if self._current else None
                if wanted is None and current is None and not waiting_logged:
                    logger.warning("no champion in %s yet: live, not ready until one is promoted",
                                   self.source.registry.uri)
                    waiting_logged = True
                recently_failed = (wanted == self._failed_version
                                   and time.monotonic() - self._failed_at < RETRY_FAILED_AFTER)
                if wanted is not None and wanted != current and not recently_failed:
                    with self._load_lock:
                        self._load_and_swap(wanted)
                if self._current is not None and self.reload_interval <= 0:
                    return  # loaded, and told not to follow the alias
            elif self._current is None:
                with self._load_lock:
                    if self._current is None and not self._load_and_swap(None):
                        logger.info("retrying in %.0f s", delay)
            else:
                return  # a fixed model, loaded: nothing to follow
            self._stop.wait(delay)

    # -- metadata -------------------------------------------------------------------------------
    def get_input_types(self) -> list[dict]:
        return [{"name": V2_INPUT_NAME, "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict]:
        classes = len(self._current.class_names) if self._current else -1
        return [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
        ]

    def describe(self) -> dict:
        """Model metadata: what is loaded and the request contract."""
        current = self._current
        info = {
            "name": self.name,
            "ready": self.ready,
            "model_version": current.version if current else None,
            "source": current.source if current else self.source.describe(),
            "follows_champion": self.source.follows_champion,
            "loaded_at": current.loaded_at if current else None,
            "class_names": current.class_names if current else None,
            "input_size": [current.image_size, current.image_size, 3] if current else None,
            "image_size": current.image_size if current else None,
            "max_instances": self.max_instances,
            "max_pixels": self.max_pixels,
            "v1_request": V1_FORMAT_HINT,
            "v2_input": {"name": V2_INPUT_NAME, "datatype": "BYTES", "shape": [-1],
                         "data": "base64-encoded JPEG/PNG/WebP images"},
            "last_load_error": self.last_error,
        }
        if current is not None:
            info["preprocessing"] = current.predictor.metadata.get("preprocessing")
        return info

    # -- inference ------------------------------------------------------------------------------
    def validate(self, payload):
        return payload  # preprocess already checked everything

    async def preprocess(self, payload, headers: dict | None = None) -> Batch:
        if isinstance(payload, InferRequest):
            batch = self._parse_v2(payload)
        else:
            batch = self._parse_v1(payload)
        return batch

    def _check_count(self, count: int, what: str) -> None:
        if count == 0:
            raise InvalidInput(f"{what} is empty: send at least one image")
        if count > self.max_instances:
            raise InvalidInput(
                f"{what} has {count} images; at most {self.max_instances} per request (--max-instances)"
            )

    def _parse_v1(self, payload: Any) -> Batch:
        if isinstance(payload, (bytes, bytearray, str)):  # a non-JSON content type reaches us raw
            try:
                payload = orjson.loads(payload)
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(f"request body is not valid JSON ({exc})") from None
        if not isinstance(payload, dict):
            raise InvalidInput(f"expected a JSON object like {V1_FORMAT_HINT}, got {type(payload).__name__}")
        if "instances" not in payload:
            hint = "; V2 requests go to /v2/models/<name>/infer" if "inputs" in payload else ""
            raise InvalidInput(f"missing field 'instances': expected {V1_FORMAT_HINT}{hint}")
        instances = payload["instances"]
        if not isinstance(instances, list):
            raise InvalidInput(f"'instances' must be a list, got {type(instances).__name__}")
        self._check_count(len(instances), "'instances'")
        where = [f"instances[{i}]" for i in range(len(instances))]
        images = [_v1_instance_image(instance, w) for instance, w in zip(instances, where)]
        return Batch(images, where, "v1")

    def _parse_v2(self, request: InferRequest) -> Batch:
        if len(request.inputs) != 1:
            raise InvalidInput(
                f"expected one input tensor ({V2_INPUT_NAME!r}, BYTES, base64 images), got {len(request.inputs)}"
            )
        tensor = request.inputs[0]
        name = f"input {tensor.name!r}"
        if tensor.datatype != "BYTES":
            raise InvalidInput(f"{name}: datatype must be BYTES (base64-encoded images), got {tensor.datatype}")
        data = _flatten(tensor.data if tensor.data is not None else [])
        try:
            shape = [int(d) for d in tensor.shape]
        except (TypeError, ValueError):
            raise InvalidInput(f"{name}: shape must be a list of integers, got {tensor.shape!r}") from None
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1) or math.prod(shape) != len(data):
            raise InvalidInput(f"{name}: shape {shape} does not match {len(data)} element(s); use [n] or [n, 1]")
        self._check_count(len(data), f"{name} data")
        where = [f"{name} data[{i}]" for i in range(len(data))]
        images = [
            bytes(item) if isinstance(item, (bytes, bytearray)) else decode_base64(item, w)
            for item, w in zip(data, where)
        ]
        return Batch(images, where, "v2", request)

    def _pixels(self, model: LoadedModel, batch: Batch) -> np.ndarray:
        pixels = []
        for data, where in zip(batch.images, batch.where):
            try:
                pixels.append(model.predictor.pixels(data, self.max_pixels))
            except InvalidImageError as exc:
                raise InvalidInput(f"{where}: {exc}") from None
        return np.stack(pixels)

    def _classify(self, model: LoadedModel, batch: Batch) -> np.ndarray:
        return model.predictor.predict_pixels(self._pixels(model, batch))

    def _explain(self, model: LoadedModel, batch: Batch) -> tuple[np.ndarray, list[dict]]:
        """Occlusion saliency: how much the predicted class's log-odds drop when each patch is greyed
        out (positive = the patch supports the prediction; log-odds stay informative when p ~ 1)."""
        pixels = self._pixels(model, batch)
        probabilities = model.predictor.predict_pixels(pixels)
        size, grid = model.image_size, EXPLAIN_GRID
        edges = np.linspace(0, size, grid + 1).round().astype(int)
        saliency = []
        for image, row in zip(pixels, probabilities):
            target = int(row.argmax())
            occluded = np.repeat(image[None], grid * grid, axis=0)
            for k in range(grid * grid):
                i, j = divmod(k, grid)
                occluded[k, edges[i]:edges[i + 1], edges[j]:edges[j + 1]] = 127
            occluded_p = model.predictor.predict_pixels(occluded)[:, target]
            drops = _log_odds(row[target]) - _log_odds(occluded_p)
            saliency.append({"class": model.class_names[target], "grid": grid, "measure": "log-odds drop",
                             "values": np.round(drops.reshape(grid, grid), 3).tolist()})
        return probabilities, saliency

    async def predict(self, batch: Batch, headers: dict | None = None, response_headers: dict | None = None) -> Result:
        model = self._current
        if model is None:
            raise ModelNotReady(self.name)
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        probabilities = await loop.run_in_executor(self._executor, self._classify, model, batch)
        labels = {"model_name": self.name, "model_version": model.version}
        metrics.INFERENCE_SECONDS.labels(protocol=batch.protocol, **labels).observe(time.perf_counter() - start)
        metrics.REQUESTS.labels(protocol=batch.protocol, **labels).inc()
        metrics.BATCH_SIZE.labels(**labels).observe(len(batch.images))
        for index in probabilities.argmax(axis=1):
            metrics.IMAGES.labels(label=model.class_names[index], **labels).inc()
        return Result(batch, probabilities, model)

    async def explain(self, batch: Batch, headers: dict | None = None) -> Result:
        model = self._current
        if model is None:
            raise ModelNotReady(self.name)
        if len(batch.images) > MAX_EXPLAIN_INSTANCES:
            raise InvalidInput(f"explain takes at most {MAX_EXPLAIN_INSTANCES} images per request, got {len(batch.images)}")
        loop = asyncio.get_running_loop()
        probabilities, saliency = await loop.run_in_executor(self._explain_executor, self._explain, model, batch)
        return Result(batch, probabilities, model, {"saliency": saliency})

    async def postprocess(self, result: Result, headers: dict | None = None, response_headers: dict | None = None):
        model, probabilities = result.model, result.probabilities
        names = model.class_names
        labels = [names[i] for i in probabilities.argmax(axis=1)]
        if response_headers is not None:
            response_headers["x-model-version"] = model.version
        if result.batch.protocol == "v1":
            predictions = [
                {"label": label, "probabilities": {n: float(p) for n, p in zip(names, row)}}
                for label, row in zip(labels, probabilities.tolist())
            ]
            for prediction, saliency in zip(predictions, result.extra.get("saliency", [])):
                prediction["saliency"] = saliency
            return {"predictions": predictions}
        request = result.batch.request
        outputs = [
            InferOutput("label", [len(labels)], "BYTES", labels),
            InferOutput("probabilities", list(probabilities.shape), "FP32",
                        probabilities.astype(np.float32).ravel().tolist(), {"class_names": ",".join(names)}),
        ]
        return InferResponse(
            response_id=request.id or uuid.uuid4().hex,
            model_name=self.name,
            model_version=model.version,
            infer_outputs=outputs,
            use_binary_outputs=request.use_binary_outputs,
            requested_outputs=request.request_outputs,
        )
