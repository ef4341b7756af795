"""Deploy a newly promoted champion. Runs only when the champion step promoted a challenger."""

from __future__ import annotations

import numpy as np

from catdog.predictor import OnnxPredictor
from catdog.registry import ModelRegistry, RegistryError


def deploy_local(registry_uri: str, version: int) -> str:
    """Local target: `make serve` (MODEL=champion) follows the registry's champion alias and reloads
    on change, so deploying means checking the alias names this version and that it loads and
    predicts; a broken model fails here, before anyone is served by it."""
    registry = ModelRegistry(registry_uri)
    if registry.champion_version() != version:
        raise RegistryError(f"champion of {registry.uri} is v{registry.champion_version()}, expected v{version}")
    predictor = OnnxPredictor(registry.fetch(version))
    blank = np.full((1, predictor.image_size, predictor.image_size, 3), 127, np.uint8)
    probabilities = predictor.predict_pixels(blank)[0]
    if not np.isclose(probabilities.sum(), 1.0, atol=1e-3):
        raise RuntimeError(f"v{version} gives probabilities that do not sum to 1: {probabilities}")
    return f"local: champion alias -> v{version}; `make serve` reloads it"
