"""Run a saved model's ONNX export: the one prediction path for evaluation and serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from catdog.model_files import ONNX_FILE, load_metadata
from catdog.preprocessing import DEFAULT_MAX_PIXELS, batch_to_model_input, image_to_pixels


class OnnxPredictor:
    def __init__(self, model_dir: Path, intra_op_threads: int = 0):
        self.model_dir = Path(model_dir)
        self.metadata = load_metadata(self.model_dir)
        self.class_names: list[str] = self.metadata["class_names"]
        self.image_size: int = int(self.metadata["image_size"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        self.session = ort.InferenceSession(
            str(self.model_dir / ONNX_FILE), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def pixels(self, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        return image_to_pixels(data, self.image_size, max_pixels)

    def predict_pixels(self, pixels: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(n, size, size, 3) pixels -> (n, n_classes) probabilities."""
        outputs = [
            self.session.run(None, {self.input_name: batch_to_model_input(list(pixels[i:i + batch_size]))})[0]
            for i in range(0, len(pixels), batch_size)
        ]
        return np.concatenate(outputs) if outputs else np.zeros((0, len(self.class_names)), np.float32)

    def predict_bytes(self, images: list[bytes]) -> np.ndarray:
        return self.predict_pixels(np.stack([self.pixels(b) for b in images]))
