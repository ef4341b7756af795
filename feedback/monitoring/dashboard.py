"""The monitoring dashboard's numbers: plain functions over the store, the registry and samples.
Its SQL is feedback.store.dashboard_queries' (predictions per day, the drift window, the aggregates
these functions turn into shares and intervals).

    registry_summary(registry) -> {"champion", "versions"}   every version: metrics, confusion matrix, decision
    validated_accuracy(session) -> per model version          accuracy on people's verdicts, Wilson interval
    neither_shares(session) -> per model version              uploads flagged as neither, verdicts of neither
    confidence_histogram(session, n_classes)                  confirmed vs corrected predictions per bin
    class_balance(predicted, train_class_counts, labels)      predicted-class shares vs training shares
    drift_test(recent, reference)                             two-sample Kolmogorov-Smirnov
    build_dashboard(db, registry, labels)                     all of it: GET /api/dashboard, what the page draws
                                                              (agreement between reviewers: feedback/monitoring/agreement.py)

Choices:
- Accuracy on people's validations, per model version: among the predictions of that version whose
  photo has a verdict, confirmed / (confirmed + corrected), with a 95 % Wilson score interval
  (z = 1.96: it stays inside [0, 1] and is honest for small n); correction rate = corrected / validated.
  A "neither" verdict (the photo is none of the labels) is no wrong cat/dog prediction: such
  predictions are left out of accuracy, correction rate and the confidence histogram, and counted
  in neither_shares instead.
- Neither, per model version: flagged_share = predictions the model flagged / predictions with an
  out-of-distribution score (models exported before the score have none: share None);
  neither_share = predictions whose photo people called neither / predictions whose photo has a
  verdict; flagged_neither = flagged predictions people called neither.
- Confidence bins: CONFIDENCE_BINS (10) equal bins over [1/k, 1] for k labels, [0.5, 1] for two
  (the predicted label's probability is never below 1/k); the last bin includes 1.
- Recent window: the champion's RECENT_LIMIT (500) newest predictions (model_version is the
  champion's number), for the drift test and the predicted-class balance.
- Drift: scipy.stats.ks_2samp (two-sided) of that window's confidences against the champion's
  test-split confidences (evaluation.json test_confidences); flagged when p < DRIFT_P (0.01) and
  both samples hold >= DRIFT_MIN_N (30) values, otherwise "not enough data".
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from datetime import datetime

from scipy.stats import ks_2samp
from sqlalchemy.orm import Session

from catdog import storage
from catdog.model_files import EVALUATION_FILE, METADATA_FILE
from catdog.registry import COMPLETE_MARKER, ModelRegistry
from feedback.monitoring.agreement import read_agreement
from feedback.store import dashboard_queries
from feedback.store.db import Database
from feedback.store.tables import utcnow

logger = logging.getLogger("catdog.feedback")
DAYS = 90
CONFIDENCE_BINS = 10
RECENT_LIMIT = 500
DRIFT_P = 0.01
DRIFT_MIN_N = 30
Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile
METRIC_KEYS = ("accuracy", "precision", "recall", "f1", "auc", "n")  # catdog.champion's COMPARED_METRICS and n

_version_files: dict[tuple[str, int, str], object] = {}  # versions are immutable once complete
_version_files_lock = threading.Lock()


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion successes/n; None when n is 0."""
    if n == 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _finite(value):
    """JSON has no NaN: an AUC with one class in the test split is NaN in evaluation.json."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _version_key(version: str | None):
    return (0, int(version), "") if version and version.isdigit() else (1, 0, version or "")


# -- the registry ---------------------------------------------------------------------------------
def _cached(registry: ModelRegistry, version: int, name: str, read):
    key = (registry.uri, version, name)
    with _version_files_lock:
        if key in _version_files:
            return _version_files[key]
    value = read()
    with _version_files_lock:
        _version_files[key] = value
    return value


def version_json(registry: ModelRegistry, version: int, name: str) -> dict | None:
    """A complete version's JSON file (None when it has none), read once per process."""
    return _cached(registry, version, name, lambda: registry.read_json(version, name))


def registered_at(registry: ModelRegistry, version: int) -> str | None:
    """When the version was registered: the time its _COMPLETE marker holds."""
    marker = storage.join(registry.version_uri(version), COMPLETE_MARKER)
    return _cached(registry, version, COMPLETE_MARKER, lambda: storage.read_text(marker).strip() or None)


def _metrics(source: dict) -> dict:
    return {key: _finite(source.get(key)) for key in METRIC_KEYS}


def decision_summary(record: dict | None) -> dict | None:
    """The champion decision on a challenger, as the history records it."""
    if record is None:
        return None
    return {
        "promoted": bool(record.get("promoted")), "reason": record.get("reason"),
        "decided_at": record.get("decided_at"), "metric": record.get("metric"), "margin": record.get("margin"),
        "previous_champion_version": record.get("previous_champion_version"),
        "champion_version": record.get("champion_version"),
        "challenger": {k: _finite(v) for k, v in (record.get("challenger") or {}).items()},
        "champion": {k: _finite(v) for k, v in record["champion"].items()} if record.get("champion") else None,
    }


def version_summary(registry: ModelRegistry, version: int, decision: dict | None) -> dict:
    """One version's test metrics (evaluation.json; older versions: their decision record's),
    confusion matrix, classes, training counts and champion decision."""
    evaluation = version_json(registry, version, EVALUATION_FILE)
    metadata = version_json(registry, version, METADATA_FILE) or {}
    if evaluation is not None:
        metrics, source = _metrics(evaluation), EVALUATION_FILE
    elif decision is not None:
        metrics, source = {**_metrics(decision.get("challenger") or {}), "n": decision.get("n_test")}, "champion decision"
    else:
        metrics, source = None, None
    evaluation = evaluation or {}
    return {
        "version": version, "registered_at": registered_at(registry, version),
        "metrics": metrics, "metrics_source": source,
        "feedback_n": evaluation.get("feedback_n"), "feedback_accuracy": _finite(evaluation.get("feedback_accuracy")),
        "class_names": evaluation.get("class_names") or metadata.get("class_names"),
        "confusion_matrix": evaluation.get("confusion_matrix"),
        "train_class_counts": evaluation.get("train_class_counts") or None,
        "split_counts": metadata.get("split_counts"),
        "decision": decision_summary(decision),
    }


def registry_summary(registry: ModelRegistry) -> dict:
    """{"champion": {version, promoted_at, metric, score, metrics, ...} | None, "versions": [ascending]}."""
    decisions: dict[int, dict] = {}
    for record in sorted(registry.history(), key=lambda r: r.get("decided_at") or ""):
        if isinstance(record.get("challenger_version"), int):
            decisions[record["challenger_version"]] = record  # the latest decision on a version wins
    versions = [version_summary(registry, v, decisions.get(v)) for v in registry.versions()]
    alias = registry.champion()
    champion = None
    if alias is not None:
        summary = next((v for v in versions if v["version"] == alias["version"]), {})
        champion = {"version": alias["version"], "promoted_at": alias.get("promoted_at"),
                    "metric": alias.get("metric"), "score": _finite(alias.get("score")),
                    **{k: summary.get(k) for k in ("metrics", "metrics_source", "class_names", "confusion_matrix",
                                                   "train_class_counts")}}
    for summary in versions:
        summary["is_champion"] = champion is not None and summary["version"] == champion["version"]
    return {"champion": champion, "versions": versions}


# -- the store (its queries: feedback.store.dashboard_queries) ------------------------------------
def validated_accuracy(session: Session) -> list[dict]:
    """Per model version, over its predictions whose photo has a verdict of one of the labels
    (NEITHER left out): n, confirmed, corrected, accuracy with its 95 % Wilson interval, correction rate."""
    result = []
    for version, right, n in sorted(dashboard_queries.judged_per_version(session), key=lambda row: _version_key(row[0])):
        low, high = wilson_interval(right, n)
        result.append({"model_version": version, "n": n, "confirmed": right, "corrected": n - right,
                       "accuracy": right / n, "ci_low": low, "ci_high": high, "correction_rate": (n - right) / n})
    return result


def neither_shares(session: Session) -> list[dict]:
    """Per model version: predictions, scored (with an ood score), flagged (the model's neither
    flag), flagged_share; validated, neither (people's verdict), neither_share; flagged_neither."""
    result = []
    for version, n, scored, flags, validated, neither, both in sorted(dashboard_queries.neither_counts(session),
                                                                       key=lambda row: _version_key(row[0])):
        result.append({"model_version": version, "predictions": n, "scored": scored, "flagged": flags,
                       "flagged_share": flags / scored if scored else None, "validated": validated,
                       "neither": neither, "neither_share": neither / validated if validated else None,
                       "flagged_neither": both})
    return result


def bin_edges(n_classes: int, bins: int = CONFIDENCE_BINS) -> list[float]:
    low = 1 / n_classes
    return [low + (1 - low) * i / bins for i in range(bins + 1)]


def histogram(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    """Counts per bin [edges[i], edges[i+1]); the last bin includes its upper edge, values outside go to the ends."""
    bins, low, width = len(edges) - 1, edges[0], edges[-1] - edges[0]
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, max(0, math.floor((value - low) / width * bins + 1e-9)))] += 1
    return counts


def confidence_histogram(session: Session, n_classes: int, bins: int = CONFIDENCE_BINS) -> dict:
    """{"edges", "confirmed", "corrected"}: validated predictions per confidence bin (NEITHER left out)."""
    rows = dashboard_queries.judged_confidences(session)
    edges = bin_edges(n_classes, bins)
    return {"edges": edges,
            "confirmed": histogram([c for c, predicted, verdict in rows if predicted == verdict], edges),
            "corrected": histogram([c for c, predicted, verdict in rows if predicted != verdict], edges)}


# -- comparisons ----------------------------------------------------------------------------------
def _shares(counts: dict[str, float], labels: list[str]) -> dict[str, float] | None:
    total = sum(counts.values())
    return {label: counts.get(label, 0) / total for label in labels} if total else None


def class_balance(predicted: Sequence[str], train_class_counts: dict[str, int] | None, labels: Sequence[str]) -> dict:
    """Predicted-class counts and shares beside the training split's (None when unknown)."""
    counts: dict[str, int] = {}
    for label in predicted:
        counts[label] = counts.get(label, 0) + 1
    names = list(dict.fromkeys([*labels, *(train_class_counts or {}), *counts]))
    return {"labels": names, "n": len(predicted),
            "predicted_counts": {label: counts.get(label, 0) for label in names},
            "predicted_shares": _shares(counts, names),
            "training_counts": {label: (train_class_counts or {}).get(label, 0) for label in names}
            if train_class_counts else None,
            "training_shares": _shares(train_class_counts or {}, names)}


def drift_test(recent: Sequence[float], reference: Sequence[float], p_threshold: float = DRIFT_P,
               min_n: int = DRIFT_MIN_N) -> dict:
    """Two-sample Kolmogorov-Smirnov test: "drift" when p < p_threshold and both samples have
    min_n values or more, "no drift" when p >= p_threshold, "not enough data" otherwise."""
    result = {"n_recent": len(recent), "n_reference": len(reference), "p_threshold": p_threshold, "min_n": min_n,
              "statistic": None, "p_value": None, "drift": None}
    if min(len(recent), len(reference)) < min_n:
        return {**result, "status": "not enough data"}
    test = ks_2samp(recent, reference)
    drifted = bool(test.pvalue < p_threshold)
    return {**result, "status": "drift" if drifted else "no drift", "drift": drifted,
            "statistic": float(test.statistic), "p_value": float(test.pvalue)}


# -- everything ------------------------------------------------------------------------------------
def build_dashboard(db: Database, registry: ModelRegistry, labels: Sequence[str], now: datetime | None = None) -> dict:
    """What GET /api/dashboard answers and the page draws (the predictor's metrics are added by the router)."""
    registry_error = None
    try:
        summary = registry_summary(registry)
    except Exception as exc:  # a registry on gs:// without credentials, a damaged record...: say so
        logger.warning("dashboard: cannot read the registry %s: %s: %s", registry.uri, type(exc).__name__, exc)
        summary, registry_error = {"champion": None, "versions": []}, f"{type(exc).__name__}: {exc}"
    champion = summary["champion"]
    with db.read() as session:
        per_day = dashboard_queries.predictions_per_day(session, DAYS, now=now)
        accuracy = validated_accuracy(session)
        neither = neither_shares(session)
        confidences = confidence_histogram(session, len(labels))
        reviewers = read_agreement(session)
        recent = dashboard_queries.recent_predictions(session, str(champion["version"]), RECENT_LIMIT) if champion else []
    reference: list[float] = []
    if champion and registry_error is None:
        reference = (version_json(registry, champion["version"], EVALUATION_FILE) or {}).get("test_confidences") or []
    drift = drift_test([confidence for _, confidence, _ in recent], reference)
    edges = confidences["edges"]
    drift["histogram"] = {"edges": edges, "recent": _fractions(histogram([c for _, c, _ in recent], edges)),
                          "reference": _fractions(histogram(reference, edges))}
    return {
        "generated_at": (now or utcnow()).isoformat(),
        "registry": {"uri": registry.uri, "error": registry_error},
        "champion": champion,
        "versions": summary["versions"],
        "predictions_per_day": per_day,
        "days": DAYS,
        "validated_accuracy": accuracy,
        "neither": neither,
        "confidence_histogram": confidences,
        "recent": {"model_version": str(champion["version"]) if champion else None, "limit": RECENT_LIMIT,
                   "n": len(recent), "oldest": recent[-1][2].isoformat() if recent else None,
                   "newest": recent[0][2].isoformat() if recent else None},
        "class_balance": class_balance([label for label, _, _ in recent],
                                       champion and champion["train_class_counts"], labels),
        "drift": drift,
        "agreement": reviewers,
    }


def _fractions(counts: list[int]) -> list[float] | None:
    total = sum(counts)
    return [c / total for c in counts] if total else None
