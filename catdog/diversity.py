"""Farthest-first (k-center greedy) selection: pick photos far apart in a feature space.

Used by the feedback app's diverse review order (feedback/store/queries.py: the least confident
queued photos, spread over the model's embedding, catdog.model.FeatureEmbedding) and by its
simulation in bench/active.py, so both pick the same way. Pure NumPy (no TensorFlow): the app
imports it.
"""

from __future__ import annotations

import numpy as np


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Euclidean distances, by |a|^2 + |b|^2 - 2 a.b: one matmul, no (n, m, d) array."""
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(squared, 0.0))


def k_center_greedy(candidates: np.ndarray, centres: np.ndarray, k: int) -> np.ndarray:
    """Positions of k rows of `candidates` picked farthest-first: each the candidate farthest
    (Euclidean) from `centres` (the already labelled photos; may be empty) and the picks so far
    (Sener & Savarese 2018's greedy core set). With no centres the first pick is row 0, so callers
    pass candidates in their preferred order (the app: least confident first). Ties: the lower row.
    Hand-rolled: a few lines of NumPy; scikit-learn has no k-center."""
    candidates = np.asarray(candidates, np.float64)
    centres = np.asarray(centres, np.float64).reshape(-1, candidates.shape[1] if candidates.ndim == 2 else 0)
    k = min(int(k), len(candidates))
    if k <= 0:
        return np.zeros(0, dtype=int)
    nearest = np.full(len(candidates), np.inf)
    for start in range(0, len(centres), 4096):  # chunks bound the memory for many labelled photos
        nearest = np.minimum(nearest, _distances(candidates, centres[start:start + 4096]).min(axis=1))
    picked: list[int] = []
    for _ in range(k):
        i = int(np.argmax(nearest))  # the first inf when nothing is placed yet: row 0
        picked.append(i)
        nearest = np.minimum(nearest, _distances(candidates, candidates[i:i + 1])[:, 0])
        nearest[picked] = -1.0
    return np.asarray(picked, dtype=int)
