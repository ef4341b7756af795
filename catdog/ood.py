""""Neither a cat nor a dog": the out-of-distribution (OOD) score, its fit and its threshold.

The score of a photo is the squared distance of its pooled backbone features (what the softmax
head sees; flip-averaged when the model averages the photo and its mirror image) to the nearest
class mean of the training features, counted only in the directions where the training photos
vary least: what is left of x - mean_c after removing its part in the top `components` principal
directions of the within-class covariance shared by the classes (tied). Photos of other things
differ from cats and dogs mostly there (Kamoi & Kobayashi 2020: the Mahalanobis distance's power
is in its small-variance directions; ViM, Wang et al. 2022, scores that residual). On the
2,000-photo data set (docs/BENCHMARKS.md, the comparison) it flags every one of 28 non-pet photos
at 1 % validation false rejects, where the whitened Mahalanobis distance in the top 64 directions
flagged 11 % and the energy score 18 %. It is computed inside the exported model from the same
forward pass as the probabilities (catdog.model.OodScore, output `ood_score`), so serving pays a
(classes x d) by (d, k) matmul and nothing else: |x - m_c|^2 - |(x - m_c) @ basis|^2, min over c.

Fit (fit_ood, called by catdog.train after fine-tuning): one pass of the fine-tuned model over the
train split (no augmentation) for the statistics and one over the validation split for the
threshold: a distribution-free upper confidence bound (THRESHOLD_CONFIDENCE, 95 %) on the 99th
percentile of real cat and dog photos' scores, read off the validation photos' sorted scores (the
smallest order statistic X_(r) with P(Binomial(n, 0.99) <= r - 1) >= 95 %), so that, with 95 %
confidence, at most FALSE_REJECT_TARGET of real cat and dog photos are called "neither". The plain
99th percentile of 444 validation photos (the default split of 2,000) moves by about ±0.5 points:
it gave 0.9 % false rejects on validation and 1.5 % on the 1,000 test photos (docs/BENCHMARKS.md).
A photo is flagged `neither` when its score is ABOVE the threshold.

metadata.json's "ood": {"method", "score_output", "threshold", "threshold_rule", "val_false_reject_rate",
"features", "components", "train_n", "val_n", "fit_seconds"} (models trained before this have
none, and no `ood_score` output).

The numeric helpers here need only NumPy and scikit-learn (evaluation and serving import them
without TensorFlow); fit_ood imports TensorFlow when called.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from catdog.onnx_predictor import OOD_OUTPUT as SCORE_OUTPUT

METHOD = "tied-residual-pca"
COMPONENTS = 64  # principal directions kept (docs/BENCHMARKS.md: the comparison on real photos)
EMBEDDING_DIMS = 32  # the first of them make the model's embedding (catdog.model.FeatureEmbedding): 128 bytes a photo
FALSE_REJECT_TARGET = 0.01
THRESHOLD_CONFIDENCE = 0.95


def fit_statistics(features: np.ndarray, labels: np.ndarray, n_classes: int,
                   components: int = COMPONENTS) -> tuple[np.ndarray, np.ndarray]:
    """(means (classes, d), basis (d, k)), float32: the class means of the features and the top k
    principal directions (orthonormal columns) of their tied within-class covariance, k =
    min(components, d, n - classes). ValueError when a class has no photo."""
    x = np.asarray(features, np.float64)
    labels = np.asarray(labels).astype(int)
    missing = [c for c in range(n_classes) if not np.any(labels == c)]
    if missing:
        raise ValueError(f"no training features of class(es) {missing}: cannot fit the OOD statistics")
    means = np.stack([x[labels == c].mean(axis=0) for c in range(n_classes)])
    residuals = x - means[labels]
    covariance = residuals.T @ residuals / len(x)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
    k = max(1, min(components, x.shape[1], len(x) - n_classes))
    basis = eigenvectors[:, np.argsort(eigenvalues)[::-1][:k]]
    return means.astype(np.float32), basis.astype(np.float32)


def residual_scores(features: np.ndarray, means: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """What the model's OodScore layer computes, in NumPy: (n,) float32, min over the classes of
    |f - m_c|^2 - |(f - m_c) @ basis|^2 (at least 0)."""
    diff = np.asarray(features, np.float32)[:, None, :] - means[None]
    return np.maximum((diff ** 2).sum(axis=-1) - ((diff @ basis) ** 2).sum(axis=-1), 0).min(axis=1)


def choose_threshold(scores: np.ndarray, target: float = FALSE_REJECT_TARGET,
                     confidence: float = THRESHOLD_CONFIDENCE) -> tuple[float, float]:
    """(threshold, false-reject rate at it) from in-distribution scores: the order statistic that is
    an upper `confidence` bound on their 1 - target quantile (the highest score when there are too
    few scores for the bound). confidence 0.5 is about the plain quantile."""
    from scipy.stats import binom

    scores = np.sort(np.asarray(scores, np.float64))
    if not len(scores):
        raise ValueError("no validation scores to choose the OOD threshold on")
    # P(X_(r) >= the true quantile) = P(Binomial(n, 1 - target) <= r - 1); r is 1-based
    rank = int(binom.ppf(confidence, len(scores), 1 - target)) + 1
    threshold = float(scores[min(rank, len(scores)) - 1])
    return threshold, float(np.mean(scores > threshold))


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the ROC curve of telling out-of-distribution photos (positives, higher scores)
    from in-distribution ones; nan when either set is empty."""
    if not len(in_scores) or not len(out_scores):
        return float("nan")
    truth = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    return float(roc_auc_score(truth, np.r_[np.asarray(in_scores, np.float64), np.asarray(out_scores, np.float64)]))


def detection_metrics(in_scores: np.ndarray, out_scores: np.ndarray, threshold: float) -> dict:
    """ood_n, ood_detection_rate (share of the non-pet photos flagged) and ood_auroc against in_scores."""
    out_scores = np.asarray(out_scores, np.float64)
    return {"ood_n": int(len(out_scores)),
            "ood_detection_rate": float(np.mean(out_scores > threshold)) if len(out_scores) else float("nan"),
            "ood_auroc": auroc(in_scores, out_scores)}


def ood_layer(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, n_classes: int,
              components: int = COMPONENTS, features: str = "pooled_features", fit_seconds: float | None = None):
    """The catdog.model.OodScore layer (named SCORE_OUTPUT) fitted on train features and labels,
    its threshold chosen on validation features; its info is metadata.json's "ood"."""
    from catdog.model import OodScore

    means, basis = fit_statistics(train_x, train_y, n_classes, components)
    threshold, false_rejects = choose_threshold(residual_scores(val_x, means, basis))
    info = {"method": METHOD, "score_output": SCORE_OUTPUT, "threshold": threshold,
            "threshold_rule": f"upper {THRESHOLD_CONFIDENCE:.0%} confidence bound on the validation scores' "
                              f"{1 - FALSE_REJECT_TARGET:.0%} quantile",
            "val_false_reject_rate": false_rejects, "features": features, "components": int(basis.shape[1]),
            "train_n": int(len(train_x)), "val_n": int(len(val_x))}
    if fit_seconds is not None:
        info["fit_seconds"] = round(fit_seconds, 1)
    layer = OodScore(basis.shape[1], n_classes, info, name=SCORE_OUTPUT)
    layer.build((None, train_x.shape[1]))
    layer.set_weights([means, basis])
    return layer


def fit_ood(classifier, dataset_dir: Path, flip: bool, batch_size: int, components: int = COMPONENTS):
    """ood_layer for a trained build_model classifier: statistics from the train split's pooled
    features, threshold from the validation split's (the serving model's features: flip-averaged
    when `flip`; no augmentation). Prints one line with its cost."""
    from catdog.dataset import split_features
    from catdog.model import POOLED_FEATURES, pooled_features_model

    started = time.monotonic()
    feature_model = pooled_features_model(classifier, flip)
    train_x, train_y = split_features(feature_model, dataset_dir, "train", batch_size)
    val_x, _ = split_features(feature_model, dataset_dir, "validation", batch_size)
    features = f"{POOLED_FEATURES} (global average of out_relu{', flip-averaged' if flip else ''})"
    layer = ood_layer(train_x, train_y, val_x, int(classifier.output_shape[-1]), components, features,
                      time.monotonic() - started)
    info = layer.info
    print(f"ood: {METHOD} (k={info['components']}) fitted on {info['train_n']} train photos' features; threshold "
          f"{info['threshold']:.1f} ({info['val_false_reject_rate']:.1%} of {info['val_n']} validation photos "
          f"above it); {info['fit_seconds']:.1f} s", flush=True)
    return layer
