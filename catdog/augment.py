"""Training-time augmentations, defined once as Keras preprocessing layers.

The train step applies them inside its tf.data pipeline (on CPU that overlaps with the model
step; inside the model they would also end up in the ONNX export). Pixels stay in [0, 255].
"""

from __future__ import annotations

import keras

AUGMENTATION_LAYERS = {
    "flip": lambda seed: keras.layers.RandomFlip("horizontal", seed=seed),
    "rotation": lambda seed: keras.layers.RandomRotation(0.06, fill_mode="reflect", seed=seed),
    "zoom": lambda seed: keras.layers.RandomZoom((-0.2, 0.0), fill_mode="reflect", seed=seed),
    "contrast": lambda seed: keras.layers.RandomContrast(0.2, value_range=(0, 255), seed=seed),
    "brightness": lambda seed: keras.layers.RandomBrightness(0.15, value_range=(0, 255), seed=seed),
    "grayscale": lambda seed: keras.layers.RandomGrayscale(factor=0.1, seed=seed),
}


def parse_augmentations(spec: str) -> list[str]:
    """'flip, zoom' -> ['flip', 'zoom']; raises ValueError naming unknown entries."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in AUGMENTATION_LAYERS]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; choose from {sorted(AUGMENTATION_LAYERS)}")
    return names


def build_augmentation(spec: str, seed: int, output_size: int | None = None) -> keras.Sequential:
    """A Sequential of the chosen layers (empty = identity), each seeded from `seed`; with
    output_size, the augmented photos are then downscaled to output_size x output_size (antialiased
    bilinear: the fine-tuning resolution, catdog.train)."""
    names = parse_augmentations(spec)
    layers = [AUGMENTATION_LAYERS[name](seed + i) for i, name in enumerate(names)]
    if output_size is not None:
        layers.append(keras.layers.Resizing(output_size, output_size, antialias=True, name="finetune_resolution"))
    return keras.Sequential(layers, name="augmentation")
