"""Label issues: training photos whose label may be wrong, near-duplicate pairs and outliers.

Where it runs: the label-issues step, after train and beside evaluate. It needs the frozen
backbone's pooled features of every train and validation photo, which the train step's frozen
phase computes once anyway (catdog.train.train_head) and, since this step, writes to its
`features` artifact (catdog.dataset.save_split_features: train and validation features in file
order, with their labels and sha256). So the step makes no backbone pass of its own; only a run
with frozen_epochs=0 (no frozen phase) makes one extra pass in train to write the artifact. Keeping
the step in its own component (rather than inside train) lets it fail, be cached and be re-run on
its own, and its report sits beside evaluate's in the KFP / Vertex AI UI.

Method (find_issues):
- Out-of-fold probabilities: K-fold (FOLDS, stratified, seeded) multinomial logistic regressions,
  scikit-learn's, on the standardised features of the train and validation photos together: each
  photo's probabilities come from the head that did not see it. That is the frozen phase's head (a
  dense softmax on the same pooled features) without its dropout.
- Label issues: cleanlab's find_label_issues (prune_by_noise_rate: how many to flag comes from the
  estimated confident joint), ranked by label quality (cleanlab.rank, "self_confidence": the
  out-of-sample probability of the given label; lowest first). Every photo's quality is returned
  too, so a caller can take the top N (the bench does: bench/labels.py).
- Near duplicates: pairs whose feature vectors' cosine similarity is at least DUPLICATE_SIMILARITY
  (scikit-learn's radius neighbours, chunked: no n x n matrix is held). Exact copies never get here:
  ingest drops photos with the same content.
- Outliers: cleanlab's OutOfDistribution on the features (mean distance to the k nearest
  neighbours, cosine for features of more than 3 dimensions, mapped to a score in [0, 1], lower =
  more atypical); the OUTLIER_FRACTION lowest-scoring photos (at least one) are listed.

Outputs (from_artifacts; the step writes them as its `suspects` Artifact and `report` HTML): the
JSON list (suspects(): one entry per listed photo, `rank` from 1: label issues first, lowest
quality first, then near duplicates, most similar first, then outliers, most atypical first; a
photo listed for several reasons is one entry with every reason), and the page (report_html: one
self-contained page, thumbnails as JPEG data URIs, every text escaped, as catdog.gallery's).
Entry fields: rank, sha256 (the key the feedback app and ingest use), split, origin, source (path
relative to the data source; feedback photos: feedback:<label>/<file>), file (path in the ingest
snapshot), given_label, probabilities ({class: out-of-sample probability}), label_quality,
outlier_score, reasons (of "label", "near-duplicate", "outlier"), duplicates ([{sha256,
similarity, label}]).
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import numpy as np
from cleanlab.filter import find_label_issues
from cleanlab.outlier import OutOfDistribution
from cleanlab.rank import get_label_quality_scores
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

FOLDS = 5
RANKED_BY = "self_confidence"
DUPLICATE_SIMILARITY = 0.95  # cosine similarity of pooled features: on the 2,000 shared photos one pair (the same photo twice) is above 0.9, the next below
OUTLIER_FRACTION = 0.01
OUTLIER_NEIGHBOURS = 10
REGULARISATION_C = 0.01  # inverse L2 strength of the heads on standardised features (bench: 96 of 100 flips caught; 0.3: 86)
MAX_SHOWN = 60  # photos per section of the HTML page (the JSON list has them all)
THUMBNAIL_SIDE = 128
TITLE = "Training photos to check"
REASONS = ("label", "near-duplicate", "outlier")


@dataclass(frozen=True)
class Photo:
    """Where a photo of the features came from (catdog.ingest_manifest.ImageRecord's fields)."""

    sha256: str
    split: str
    origin: str
    source: str
    file: str


@dataclass
class Findings:
    """What find_issues found, by row of the features it was given."""

    probabilities: np.ndarray  # (n, classes) out-of-fold
    quality: np.ndarray  # (n,) cleanlab label quality, lower = more likely wrong
    label_issues: np.ndarray  # row indices cleanlab flags, lowest quality first
    duplicates: list[tuple[int, int, float]]  # (i, j, cosine similarity), i < j, most similar first
    outlier_scores: np.ndarray  # (n,) cleanlab OutOfDistribution, lower = more atypical
    outliers: np.ndarray  # row indices, most atypical first
    seconds: dict[str, float] = field(default_factory=dict)


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, n_classes: int,
                              folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """(n, n_classes) probabilities of each photo from a logistic head fitted on the other folds.
    Folds = min(folds, the smallest class's count); ValueError when a class has fewer than 2 photos."""
    labels = np.asarray(labels).astype(int)
    counts = np.bincount(labels, minlength=n_classes)
    if counts.min() < 2:
        raise ValueError(f"every class needs at least 2 photos for out-of-fold probabilities: counts {counts.tolist()}")
    cv = StratifiedKFold(n_splits=int(min(folds, counts.min())), shuffle=True, random_state=seed)
    head = make_pipeline(StandardScaler(), LogisticRegression(C=REGULARISATION_C, max_iter=2000))
    return cross_val_predict(head, np.asarray(features, np.float32), labels, cv=cv, method="predict_proba")


def near_duplicates(features: np.ndarray, threshold: float = DUPLICATE_SIMILARITY) -> list[tuple[int, int, float]]:
    """Pairs (i, j, similarity), i < j, whose cosine similarity is at least threshold, most similar first."""
    x = np.asarray(features, np.float32)
    neighbours = NearestNeighbors(radius=1 - threshold, metric="cosine").fit(x)
    distances, indices = neighbours.radius_neighbors(x, sort_results=True)
    pairs = [(i, int(j), float(1 - d)) for i, (ds, js) in enumerate(zip(distances, indices))
             for d, j in zip(ds, js) if j > i]
    return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))


def outlier_scores(features: np.ndarray, neighbours: int = OUTLIER_NEIGHBOURS) -> np.ndarray:
    """cleanlab's OutOfDistribution scores of the features (lower = more atypical), k = min(neighbours, n - 1)."""
    x = np.asarray(features, np.float32)
    if len(x) < 2:
        raise ValueError("outlier scores need at least 2 photos")
    return OutOfDistribution(params={"k": min(neighbours, len(x) - 1)}).fit_score(features=x, verbose=False)


def find_issues(features: np.ndarray, labels: np.ndarray, n_classes: int, seed: int = 0, folds: int = FOLDS,
                duplicate_threshold: float = DUPLICATE_SIMILARITY,
                outlier_fraction: float = OUTLIER_FRACTION) -> Findings:
    """Label issues, near-duplicate pairs and outliers among the photos whose pooled features and
    given labels (class indices) are given; see the module docstring for the method."""
    labels = np.asarray(labels).astype(int)
    seconds = {}
    started = time.monotonic()
    probabilities = out_of_fold_probabilities(features, labels, n_classes, folds, seed)
    seconds["heads"] = time.monotonic() - started
    started = time.monotonic()
    quality = get_label_quality_scores(labels, probabilities, method=RANKED_BY)
    flagged = find_label_issues(labels, probabilities, return_indices_ranked_by=RANKED_BY)
    seconds["cleanlab"] = time.monotonic() - started
    started = time.monotonic()
    pairs = near_duplicates(features, duplicate_threshold)
    seconds["duplicates"] = time.monotonic() - started
    started = time.monotonic()
    scores = outlier_scores(features)
    n_outliers = max(1, int(round(outlier_fraction * len(labels))))
    seconds["outliers"] = time.monotonic() - started
    return Findings(probabilities, quality, np.asarray(flagged, int), pairs, scores,
                    np.argsort(scores, kind="stable")[:n_outliers], {k: round(v, 2) for k, v in seconds.items()})


def suspects(findings: Findings, labels: np.ndarray, photos: Sequence[Photo], class_names: list[str]) -> list[dict]:
    """The JSON list (module docstring): every photo listed for at least one reason, in rank order."""
    order: list[int] = []
    reasons: dict[int, list[str]] = {}
    duplicates: dict[int, list[dict]] = {}

    def add(i: int, reason: str) -> None:
        if i not in reasons:
            order.append(i)
            reasons[i] = []
        if reason not in reasons[i]:
            reasons[i].append(reason)

    for i in findings.label_issues:
        add(int(i), "label")
    for i, j, similarity in findings.duplicates:
        for a, b in ((i, j), (j, i)):
            add(a, "near-duplicate")
            duplicates.setdefault(a, []).append({"sha256": photos[b].sha256, "similarity": round(similarity, 4),
                                                 "label": class_names[int(labels[b])]})
    for i in findings.outliers:
        add(int(i), "outlier")
    return [{"rank": rank, "sha256": photos[i].sha256, "split": photos[i].split, "origin": photos[i].origin,
             "source": photos[i].source, "file": photos[i].file, "given_label": class_names[int(labels[i])],
             "probabilities": {c: round(float(p), 4) for c, p in zip(class_names, findings.probabilities[i])},
             "label_quality": round(float(findings.quality[i]), 4),
             "outlier_score": round(float(findings.outlier_scores[i]), 4),
             "reasons": reasons[i], "duplicates": duplicates.get(i, [])}
            for rank, i in enumerate(order, start=1)]


def thumbnail_jpeg(photo: bytes, side: int = THUMBNAIL_SIDE) -> bytes:
    """A photo's thumbnail (longer side `side`) as JPEG bytes, decoded by catdog.preprocessing."""
    from catdog.preprocessing import decode_image

    image = decode_image(photo, draft_size=side)
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


_STYLE = ("body{font-family:sans-serif;margin:1.5em}.cards{display:flex;flex-wrap:wrap;gap:12px}"
          "figure{margin:0;width:160px}img{max-width:160px;max-height:160px}figcaption{font-size:13px}"
          ".pair{display:flex;gap:8px;border:1px solid #ccc;padding:6px}.conflict{border-color:#b00020}")


def _figure(entry: dict, thumbnail: Callable[[dict], bytes], caption: str) -> str:
    jpeg = base64.b64encode(thumbnail(entry)).decode()
    label = escape(entry["given_label"])
    return (f'<figure><img alt="{escape(entry["source"])}, labelled {label}" src="data:image/jpeg;base64,{jpeg}"/>'
            f'<figcaption title="{escape(entry["sha256"])}">{escape(entry["source"])}<br/>given: {label}<br/>'
            f"{caption}</figcaption></figure>")


def _label_caption(entry: dict) -> str:
    given = entry["probabilities"][entry["given_label"]]
    other, p = max(entry["probabilities"].items(), key=lambda kv: kv[1])
    return (f"out-of-sample P({escape(entry['given_label'])}) = {given:.1%}<br/>"
            f"model says: {escape(other)} ({p:.1%})<br/>reason: {escape(', '.join(entry['reasons']))}")


def report_html(entries: list[dict], thumbnail: Callable[[dict], bytes], n_photos: int,
                max_shown: int = MAX_SHOWN) -> str:
    """The page for suspects' entries: label issues and outliers as cards, near-duplicate pairs side
    by side (a pair with two labels outlined in red); thumbnail(entry) gives a photo's JPEG bytes."""
    by_sha = {e["sha256"]: e for e in entries}
    labels = [e for e in entries if "label" in e["reasons"]]
    outliers = sorted((e for e in entries if "outlier" in e["reasons"]), key=lambda e: e["outlier_score"])
    pairs, seen = [], set()
    for e in entries:
        for d in e["duplicates"]:
            key = tuple(sorted((e["sha256"], d["sha256"])))
            if key not in seen:
                seen.add(key)
                pairs.append((d["similarity"], e, by_sha[d["sha256"]]))
    pairs.sort(key=lambda p: -p[0])

    def shown(items: list, what: str) -> str:
        return (f"{len(items)} {what}{'' if len(items) == 1 else 's'}"
                + (f" (the first {max_shown} shown)" if len(items) > max_shown else ""))

    cards = "".join(_figure(e, thumbnail, _label_caption(e)) for e in labels[:max_shown])
    outlier_cards = "".join(_figure(e, thumbnail, f"outlier score {e['outlier_score']:.3f}<br/>"
                                    + _label_caption(e)) for e in outliers[:max_shown])
    pair_html = "".join(
        f'<div class="pair{" conflict" if a["given_label"] != b["given_label"] else ""}">'
        f"{_figure(a, thumbnail, f'similarity {similarity:.3f}')}{_figure(b, thumbnail, '')}</div>"
        for similarity, a, b in pairs[:max_shown])
    body = (f"<p>Out of {n_photos} train and validation photos, out-of-fold predictions from heads on the backbone's "
            "features. The JSON list beside this page has every one.</p>"
            f"<h2>Labels that may be wrong: {shown(labels, 'photo')}</h2><div class=\"cards\">{cards}</div>"
            f"<h2>Near-duplicate pairs: {shown(pairs, 'pair')}</h2><div class=\"cards\">{pair_html}</div>"
            f"<h2>Outliers: {shown(outliers, 'photo')}</h2><div class=\"cards\">{outlier_cards}</div>")
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"/><title>{TITLE}</title>'
            f"<style>{_STYLE}</style></head><body><h1>{TITLE}</h1>{body}</body></html>")



def from_artifacts(features_dir: Path, ingest_dir: Path, seed: int = 0) -> tuple[list[dict], str, dict]:
    """The label-issues step on the train step's features (catdog.dataset.load_split_features) and
    the ingest snapshot (where each photo is): (the JSON list, the HTML page, a summary)."""
    from catdog.dataset import load_split_features
    from catdog.ingest_manifest import load_manifest

    arrays = load_split_features(features_dir)
    class_names = [str(c) for c in arrays["class_names"]]
    by_sha = {r.sha256: r for r in load_manifest(ingest_dir).images}
    photos = [Photo(r.sha256, split, r.origin, r.source, r.file)
              for split in ("train", "validation") for r in (by_sha[str(s)] for s in arrays[f"{split}_sha256"])]
    features = np.concatenate([arrays["train_features"], arrays["validation_features"]])
    labels = np.concatenate([arrays["train_labels"], arrays["validation_labels"]])
    findings = find_issues(features, labels, len(class_names), seed)
    entries = suspects(findings, labels, photos, class_names)
    started = time.monotonic()
    page = report_html(entries, lambda e: thumbnail_jpeg((Path(ingest_dir) / e["file"]).read_bytes()), len(photos))
    findings.seconds["report"] = round(time.monotonic() - started, 2)
    summary = {"n_photos": len(photos), "label_issues": int(len(findings.label_issues)),
               "duplicate_pairs": len(findings.duplicates), "outliers": int(len(findings.outliers)),
               "listed": len(entries), "ranked_by": RANKED_BY, "seconds": findings.seconds}
    return entries, page, summary
