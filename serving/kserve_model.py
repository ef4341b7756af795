"""CatDogModel: the kserve.Model that serves the classifier's ONNX export.

Request flow (KServe's Model.__call__): preprocess -> predict or explain -> postprocess.
- preprocess: serving.requests parses a V1/Vertex body ({"instances": [{"image_bytes": {"b64": ...}}, ...]},
  for :explain also "overlay": true) or a V2 InferRequest (one BYTES tensor named image_bytes, raw
  image bytes or base64 text) into raw image bytes; every problem is a 400 naming the instance.
- predict decodes the images with the shared preprocessing (catdog.preprocessing, through
  catdog.onnx_predictor.OnnxPredictor) and runs them as ONE ONNX Runtime batch, on a small thread pool
  so the event loop keeps accepting requests; ONNX Runtime uses one intra-op thread per call.
  A V2 request that names the output "gradcam" gets the Grad-CAM maps from that same run
  (OnnxPredictor.explain_pixels).
- explain (V1 :explain; serving.explain) answers the prediction plus, per image, the predicted
  class's Grad-CAM map (the model's second ONNX output, one run for the batch; as many images as
  :predict takes). A model exported before Grad-CAM (one output) keeps serving: its explanations
  fall back to occlusion saliency, said in each answer ("method": "occlusion" and a "note" that
  retraining gives Grad-CAM); that costs OCCLUSION_GRID**2 + 1 inferences per image, so at most
  MAX_OCCLUSION_INSTANCES images per request, on their own thread.
- both verbs record the inference metrics of serving.metrics (requests and time by verb "predict"
  or "explain"; images and batch sizes), so a client that only explains (the feedback page) counts.
- postprocess shapes the answer: V1 {"predictions": [{"label", "probabilities"[, "ood_score",
  "neither"][, "explanation"]}]}, V2 label and probabilities tensors (and gradcam when asked;
  ood_score and neither for a model that has them) with a response id and the model version,
  binary when the request asks (binary_data_output, per output or for all).

Wire formats:
- explanation: {"method": "grad-cam", "class": <predicted label>, "grid": [h, w], "values": h lists of
  w floats in [0, 1] (4 decimals)[, "overlay_png": <base64 PNG of the photo at the model's input
  size, the map laid over it, when the request has "overlay": true>]}; occlusion adds "measure":
  "log-odds drop" and "note", its values being the drop of the predicted class's log-odds when each
  patch is greyed out (any sign; the overlay draws the positive part scaled to its maximum).
- V2 output "gradcam": FP32 [n, h, w], each image's map of its predicted class (the class of each
  map, comma-separated, in the output's parameter "classes"); only when requested by name.
- "Neither a cat nor a dog" (catdog.ood; from the same ONNX run, :predict and :explain alike):
  V1/Vertex "ood_score": float (higher = less like the training photos) and "neither": bool (the
  score is above the model's threshold, parameter "threshold" of the V2 outputs); V2 outputs
  "ood_score" FP32 [n] and "neither" BOOL [n], answered unless the request names other outputs.
  A model trained before the score has neither field nor output (naming them is a 400); label and
  probabilities are the same either way (a flagged photo still gets its most likely class).
- The embedding (catdog.model.FeatureEmbedding: pooled features on the OOD fit's top principal
  directions, what the feedback app's diverse review order spreads over): only when asked. V1/Vertex
  "parameters": {"embedding": true} (:predict and :explain) adds "embedding": [dims floats] to each
  prediction of a model that has it (a model trained before it answers without the field, as
  without ood_score); V2 output "embedding" FP32 [n, dims] when named (a 400 for such a model).

Loading: a model folder, a gs:// model folder, or a registry version / the champion alias. When
following the champion, a watcher thread re-reads the alias every `reload_interval` seconds and
swaps in a new version only after it loaded and answered a warm-up prediction, so requests never
see a gap; a version that fails to load is logged and skipped, the old one keeps serving.

No TensorFlow anywhere on this path (see tests/serving/test_cli.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from serving.kserve_import import kserve  # first: keeps kserve from parsing our command line
from kserve.errors import InvalidInput, ModelNotReady
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from catdog.onnx_predictor import Outputs
from catdog.preprocessing import DEFAULT_MAX_PIXELS, InvalidImageError
from serving import metrics
from serving.explain import (
    MAX_OCCLUSION_INSTANCES,
    OCCLUSION_GRID,
    gradcam_explanations,
    occlusion_explanations,
    predicted_maps,
)
from serving.requests import V1_FORMAT_HINT, V2_INPUT_NAME, Batch, parse_v1, parse_v2, requested_outputs
from serving.source import LoadedModel, ModelSource, available_cpus, content_version  # noqa: F401 (re-exported)

logger = logging.getLogger("catdog.serving")

DEFAULT_MODEL_NAME = "catdog"
DEFAULT_MAX_INSTANCES = 32
DEFAULT_RELOAD_INTERVAL = 5.0
RETRY_FAILED_AFTER = 60.0  # seconds before a champion version that failed to load is tried again


@dataclass
class Result:
    batch: Batch
    probabilities: np.ndarray
    model: LoadedModel
    gradcam: np.ndarray | None = None  # V2, when requested: (n, h, w), each image's predicted-class map
    explanations: list[dict] | None = None  # V1 :explain: one per image
    ood_score: np.ndarray | None = None  # (n,), a model with the neither score only
    neither: np.ndarray | None = None  # (n,) bool
    embedding: np.ndarray | None = None  # (n, dims), when asked


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
        # occlusion explanations (up to MAX_OCCLUSION_INSTANCES x (OCCLUSION_GRID**2 + 1) inferences) get
        # their own thread: the OS time-slices one against predictions instead of queueing them behind it
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
            "serving %s as %r version %s (%d px, classes %s, explain: %s)%s",
            loaded.source, self.name, loaded.version, loaded.image_size, loaded.class_names,
            "grad-cam %dx%d" % loaded.gradcam_grid if loaded.gradcam_grid else
            "occlusion (exported without Grad-CAM; retrain for it)",
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
        """label and probabilities; gradcam [n, h, w] too (when requested) for a model that has it."""
        current = self._current
        outputs = [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(current.class_names) if current else -1]},
        ]
        if current is not None and current.gradcam_grid:
            outputs.append({"name": "gradcam", "datatype": "FP32", "shape": [-1, *current.gradcam_grid]})
        if current is not None and current.predictor.has_ood:
            outputs += [{"name": "ood_score", "datatype": "FP32", "shape": [-1]},
                        {"name": "neither", "datatype": "BOOL", "shape": [-1]}]
        if current is not None and current.predictor.has_embedding:
            dims = int(current.predictor.metadata["embedding"]["dims"])
            outputs.append({"name": "embedding", "datatype": "FP32", "shape": [-1, dims]})
        return outputs

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
                         "data": "JPEG/PNG/WebP images: raw bytes (binary tensor extension) or base64 text"},
            "v2_outputs": self.get_output_types(),
            "explain_method": None if current is None else "grad-cam" if current.gradcam_grid else "occlusion",
            "explain_grid": None if current is None else list(current.gradcam_grid or (OCCLUSION_GRID, OCCLUSION_GRID)),
            # the neither score (catdog.ood): method, threshold, ...; None for a model trained before it
            "ood": current.predictor.metadata.get("ood") if current is not None and current.predictor.has_ood else None,
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
            return parse_v2(payload, self.max_instances)
        return parse_v1(payload, self.max_instances)

    def _pixels(self, model: LoadedModel, batch: Batch) -> np.ndarray:
        pixels = []
        for data, where in zip(batch.images, batch.where):
            try:
                pixels.append(model.predictor.pixels(data, self.max_pixels))
            except InvalidImageError as exc:
                raise InvalidInput(f"{where}: {exc}") from None
        return np.stack(pixels)

    def _serving(self) -> LoadedModel:
        if self._current is None:
            raise ModelNotReady(self.name)
        return self._current

    def _classify(self, model: LoadedModel, batch: Batch, with_gradcam: bool) -> Outputs:
        """Outputs (the neither score when the model has it), and with_gradcam each image's
        predicted-class map, from one ONNX run."""
        outputs = model.predictor.run_pixels(self._pixels(model, batch), gradcam=with_gradcam, embedding=batch.embedding)
        if with_gradcam:
            outputs.gradcam = predicted_maps(outputs.probabilities, outputs.gradcam)
        return outputs

    def _explain_with(self, explain, model: LoadedModel, batch: Batch) -> tuple[Outputs, list[dict]]:
        return explain(model.predictor, self._pixels(model, batch), batch.overlay, embedding=batch.embedding)

    def _check_embedding(self, model: LoadedModel, batch: Batch) -> None:
        """V2 names its outputs: naming one the model lacks is a 400. V1's parameters.embedding means
        "with the embedding when the model has it" (the app asks it of every model it may meet)."""
        if not batch.embedding or model.predictor.has_embedding:
            return
        if batch.protocol == "v2":
            raise InvalidInput(f"output 'embedding': model version {model.version} was trained without it "
                               "(a model trained since has it)")
        batch.embedding = False

    async def predict(self, batch: Batch, headers: dict | None = None, response_headers: dict | None = None) -> Result:
        model = self._serving()
        self._check_embedding(model, batch)
        if batch.overlay:
            raise InvalidInput("'overlay' is for :explain (a map over the photo); :predict gives no map")
        with_gradcam = "gradcam" in batch.outputs
        if with_gradcam and model.gradcam_grid is None:
            raise InvalidInput(f"output 'gradcam': model version {model.version} was exported without Grad-CAM "
                               "(a model trained since has it); its outputs are label and probabilities")
        missing = sorted(batch.outputs & {"ood_score", "neither"}) if not model.predictor.has_ood else []
        if missing:
            raise InvalidInput(f"output {missing[0]!r}: model version {model.version} was trained without the "
                               "neither score (a model trained since has it)")
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        outputs = await loop.run_in_executor(self._executor, self._classify, model, batch, with_gradcam)
        self._record("predict", model, batch, outputs.probabilities, time.perf_counter() - start)
        return Result(batch, outputs.probabilities, model, gradcam=outputs.gradcam,
                      ood_score=outputs.ood_score, neither=outputs.neither, embedding=outputs.embedding)

    def _record(self, verb: str, model: LoadedModel, batch: Batch, probabilities: np.ndarray, seconds: float) -> None:
        """The inference metrics of one answered request (serving.metrics)."""
        labels = {"model_name": self.name, "model_version": model.version}
        metrics.INFERENCE_SECONDS.labels(protocol=batch.protocol, verb=verb, **labels).observe(seconds)
        metrics.REQUESTS.labels(protocol=batch.protocol, verb=verb, **labels).inc()
        metrics.BATCH_SIZE.labels(**labels).observe(len(batch.images))
        for index in probabilities.argmax(axis=1):
            metrics.IMAGES.labels(label=model.class_names[index], **labels).inc()

    async def explain(self, batch: Batch, headers: dict | None = None) -> Result:
        model = self._serving()
        self._check_embedding(model, batch)
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        if model.gradcam_grid is not None:
            outputs, explanations = await loop.run_in_executor(self._executor, self._explain_with, gradcam_explanations,
                                                               model, batch)
        elif len(batch.images) > MAX_OCCLUSION_INSTANCES:
            raise InvalidInput(
                f"model version {model.version} was exported without Grad-CAM, so explain falls back to occlusion "
                f"saliency ({OCCLUSION_GRID ** 2 + 1} inferences per image): at most {MAX_OCCLUSION_INSTANCES} "
                f"images per request, got {len(batch.images)}"
            )
        else:
            outputs, explanations = await loop.run_in_executor(self._explain_executor, self._explain_with,
                                                               occlusion_explanations, model, batch)
        self._record("explain", model, batch, outputs.probabilities, time.perf_counter() - start)
        return Result(batch, outputs.probabilities, model, explanations=explanations,
                      ood_score=outputs.ood_score, neither=outputs.neither, embedding=outputs.embedding)

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
            if result.ood_score is not None:
                for prediction, score, neither in zip(predictions, result.ood_score.tolist(), result.neither.tolist()):
                    prediction |= {"ood_score": score, "neither": neither}
            for prediction, explanation in zip(predictions, result.explanations or []):
                prediction["explanation"] = explanation
            if result.embedding is not None:
                for prediction, vector in zip(predictions, result.embedding.round(5).tolist()):
                    prediction["embedding"] = vector
            return {"predictions": predictions}
        request = result.batch.request
        outputs = [
            InferOutput("label", [len(labels)], "BYTES", labels),
            InferOutput("probabilities", list(probabilities.shape), "FP32",
                        probabilities.astype(np.float32).ravel().tolist(), {"class_names": ",".join(names)}),
        ]
        if result.gradcam is not None:
            outputs.append(InferOutput("gradcam", list(result.gradcam.shape), "FP32", result.gradcam.astype(np.float32),
                                       {"classes": ",".join(labels)}))
        if result.ood_score is not None:
            threshold = {"threshold": model.predictor.ood_threshold}
            outputs += [InferOutput("ood_score", [len(labels)], "FP32", result.ood_score.astype(np.float32), threshold),
                        InferOutput("neither", [len(labels)], "BOOL", result.neither.astype(bool), threshold)]
        if result.embedding is not None:
            outputs.append(InferOutput("embedding", list(result.embedding.shape), "FP32",
                                       result.embedding.astype(np.float32)))
        return InferResponse(
            response_id=request.id or uuid.uuid4().hex,
            model_name=self.name,
            model_version=model.version,
            infer_outputs=outputs,
            use_binary_outputs=request.use_binary_outputs,
            requested_outputs=requested_outputs(request),
        )
