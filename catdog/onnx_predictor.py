"""Run a saved model's ONNX export: the one prediction path for evaluation and serving.

Outputs: `probabilities` always; `gradcam` when asked (models exported before Grad-CAM lack it);
`ood_score` (n,) and the `neither` flag (score > metadata["ood"]["threshold"], catdog.ood) from the
same run, for models trained with the out-of-distribution fit; `embedding` (n, dims) when asked
(catdog.model.FeatureEmbedding; models trained since 2026-12-04 have it). Models without it (in registries
since before) keep working: their Outputs.ood_score and .neither are None and has_ood is False.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from catdog.model_files import METADATA_FILE, ONNX_FILE, centre_onnx_file, input_size, load_metadata
from catdog.preprocessing import DEFAULT_MAX_PIXELS, batch_to_model_input, image_to_pixels

PROBABILITIES_OUTPUT = "probabilities"  # (n, classes)
GRADCAM_OUTPUT = "gradcam"  # (n, h, w, classes), each map in [0, 1]; models exported before it lack it
OOD_OUTPUT = "ood_score"  # (n,), higher = less like the training photos; models trained before it lack it
EMBEDDING_OUTPUT = "embedding"  # (n, dims) float32, catdog.model.FeatureEmbedding; models trained before it lack it


@dataclass
class Outputs:
    """One run's answers for n photos; the optional ones are None when not asked for or absent."""

    probabilities: np.ndarray  # (n, classes)
    gradcam: np.ndarray | None = None  # (n, h, w, classes)
    ood_score: np.ndarray | None = None  # (n,) float32
    neither: np.ndarray | None = None  # (n,) bool: ood_score > the model's threshold
    embedding: np.ndarray | None = None  # (n, dims) float32, when asked


class OnnxPredictor:
    def __init__(self, model_dir: Path, intra_op_threads: int = 0):
        self.model_dir = Path(model_dir)
        self.metadata = load_metadata(self.model_dir)
        self.class_names: list[str] = self.metadata["class_names"]
        self.image_size: int = input_size(self.metadata)  # the side of the pixels the model takes
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        self.session = ort.InferenceSession(
            str(self.model_dir / ONNX_FILE), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        output_names = [output.name for output in self.session.get_outputs()]
        # models exported before the outputs were named have one output, Identity:0
        self.probabilities_output = PROBABILITIES_OUTPUT if PROBABILITIES_OUTPUT in output_names else output_names[0]
        self.has_gradcam: bool = GRADCAM_OUTPUT in output_names
        self.has_ood: bool = OOD_OUTPUT in output_names
        self.has_embedding: bool = EMBEDDING_OUTPUT in output_names
        # a model with a centre view (catdog.test_time_views): its second ONNX file, run by _answer
        self.centre_session: ort.InferenceSession | None = None
        self.centre_view_below: float | None = None
        centre = centre_onnx_file(self.metadata)
        if centre:
            self.centre_session = ort.InferenceSession(str(self.model_dir / centre), options,
                                                       providers=["CPUExecutionProvider"])
            self.centre_view_below = float(self.metadata["test_time_views"]["centre_view_below"])
            self.centre_input_name = self.centre_session.get_inputs()[0].name
        self.ood_threshold: float | None = None
        if self.has_ood:
            try:
                self.ood_threshold = float(self.metadata["ood"]["threshold"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{self.model_dir}: the model has an {OOD_OUTPUT} output but metadata.json "
                                 f"has no ood.threshold ({type(exc).__name__}: {exc})") from None

    def pixels(self, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        return image_to_pixels(data, self.image_size, max_pixels)

    def _run(self, names: list[str], pixels: np.ndarray, batch_size: int) -> list[np.ndarray] | None:
        """The named outputs over batches of pixels, concatenated; None when pixels is empty."""
        runs = [self._answer(names, batch_to_model_input(list(pixels[i:i + batch_size])))
                for i in range(0, len(pixels), batch_size)]
        return [np.concatenate(outputs) for outputs in zip(*runs)] if runs else None

    def _answer(self, names: list[str], batch: np.ndarray) -> list[np.ndarray]:
        """One batch's named outputs, the first being the probabilities. With a centre view, the
        photos whose top probability is below centre_view_below also go through the centre ONNX
        file, and their probabilities become the mean of both: the rule of metadata.json's
        "test_time_views", the same as the Keras model's (catdog.model.CentreViewRule)."""
        outputs = self.session.run(names, {self.input_name: batch})
        if self.centre_session is not None:
            probabilities = outputs[0]
            unsure = probabilities.max(axis=1) < self.centre_view_below
            if unsure.any():
                centre = self.centre_session.run(None, {self.centre_input_name: batch[unsure]})[0]
                probabilities[unsure] = (probabilities[unsure] + centre) / 2
        return outputs

    def predict_pixels(self, pixels: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(n, size, size, 3) pixels -> (n, n_classes) probabilities (only that output is computed)."""
        outputs = self._run([self.probabilities_output], pixels, batch_size)
        return outputs[0] if outputs else np.zeros((0, len(self.class_names)), np.float32)

    def run_pixels(self, pixels: np.ndarray, gradcam: bool = False, batch_size: int = 64,
                   embedding: bool = False) -> Outputs:
        """(n, size, size, 3) pixels -> Outputs: probabilities, the OOD score and flag when the model
        has them, with `gradcam` the maps and with `embedding` the embedding (ValueError for a model
        without the asked output); one run a batch."""
        for asked, has, name, why in ((gradcam, self.has_gradcam, GRADCAM_OUTPUT, "exported before Grad-CAM"),
                                      (embedding, self.has_embedding, EMBEDDING_OUTPUT, "trained before it")):
            if asked and not has:
                raise ValueError(f"the model in {self.model_dir} has no {name} output ({why}: retrain it)")
        names = [self.probabilities_output] + [GRADCAM_OUTPUT] * gradcam + [OOD_OUTPUT] * self.has_ood + \
            [EMBEDDING_OUTPUT] * embedding
        outputs = self._run(names, pixels, batch_size)
        if outputs is None:
            h, w = self.metadata["explanation"]["grid"] if gradcam else (0, 0)
            dims = int(self.metadata.get("embedding", {}).get("dims", 0))
            outputs = [np.zeros((0, len(self.class_names)), np.float32)] + \
                [np.zeros((0, h, w, len(self.class_names)), np.float32)] * gradcam + \
                [np.zeros(0, np.float32)] * self.has_ood + [np.zeros((0, dims), np.float32)] * embedding
        found = dict(zip(names, outputs))
        result = Outputs(outputs[0], found.get(GRADCAM_OUTPUT), embedding=found.get(EMBEDDING_OUTPUT))
        if self.has_ood:
            result.ood_score = found[OOD_OUTPUT].reshape(-1)
            result.neither = result.ood_score > self.ood_threshold
        return result

    def explain_pixels(self, pixels: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """(n, size, size, 3) pixels -> (probabilities (n, n_classes), Grad-CAM maps (n, h, w,
        n_classes) in [0, 1]), both from one run per batch (run_pixels). ValueError for a model without maps."""
        outputs = self.run_pixels(pixels, gradcam=True, batch_size=batch_size)
        return outputs.probabilities, outputs.gradcam

    def predict_bytes(self, images: list[bytes]) -> np.ndarray:
        return self.predict_pixels(np.stack([self.pixels(b) for b in images]))


def load_checked(model_dir: Path, intra_op_threads: int = 0) -> OnnxPredictor:
    """Open a model folder and check it with one prediction of a grey image (one probability per
    class, summing to 1): what deploy and the server do before anyone is served by it.
    Raises ValueError saying what is wrong."""
    model_dir = Path(model_dir)
    for name in (ONNX_FILE, METADATA_FILE):
        if not (model_dir / name).is_file():
            raise ValueError(f"{model_dir} has no {name}: not a model folder")
    try:
        predictor = OnnxPredictor(model_dir, intra_op_threads)
        blank = np.full((1, predictor.image_size, predictor.image_size, 3), 127, np.uint8)
        probabilities = predictor.predict_pixels(blank)[0]
    except Exception as exc:  # a corrupt ONNX file, metadata without class_names, ...
        raise ValueError(f"the model in {model_dir} does not load or predict: {type(exc).__name__}: {exc}") from exc
    if len(probabilities) != len(predictor.class_names) or not np.isclose(probabilities.sum(), 1.0, atol=1e-3):
        raise ValueError(f"the model in {model_dir} gives probabilities {probabilities} for "
                         f"{predictor.class_names}: they should be one per class and sum to 1")
    return predictor
