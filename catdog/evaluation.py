"""Classification metrics, and evaluation of a saved model on a split or a labelled folder.

Besides accuracy, precision, recall, F1 and ROC AUC: log_loss and ece (catdog.calibration), and
for a model with the "neither" score (catdog.ood) ood_threshold and ood_false_reject_rate (the
share of the labelled cat and dog photos it flags as neither); given a folder of photos that are
neither (make evaluate OOD_DATA=...), ood_n, ood_detection_rate (the share flagged) and ood_auroc.
A model without the score has none of the ood_ keys (and OOD_DATA is an error for it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn import metrics as skm

from catdog.calibration import calibration
from catdog.ingest import DEFAULT_LABEL_MAP, IngestError, find_class_folders, relabel
from catdog.ood import detection_metrics
from catdog.onnx_predictor import OnnxPredictor, Outputs
from catdog.preprocessing import InvalidImageError

MAX_ROC_POINTS = 200  # the KFP UI draws the curve from these points; thousands add nothing


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, precision, recall, F1, ROC AUC, confusion matrix (and ROC curve when binary).

    Binary: precision/recall/F1 of the second class (e.g. 'dog'); more classes: macro averages.
    """
    labels = np.asarray(labels)
    predictions = probabilities.argmax(axis=1)
    binary = len(class_names) == 2
    average = "binary" if binary else "macro"
    result = {
        "n": int(len(labels)),
        "accuracy": float(skm.accuracy_score(labels, predictions)),
        "precision": float(skm.precision_score(labels, predictions, average=average, zero_division=0)),
        "recall": float(skm.recall_score(labels, predictions, average=average, zero_division=0)),
        "f1": float(skm.f1_score(labels, predictions, average=average, zero_division=0)),
        "confusion_matrix": skm.confusion_matrix(labels, predictions, labels=range(len(class_names))).tolist(),
        "class_names": list(class_names),
    }
    calibrated = calibration(labels, probabilities)
    result |= {"log_loss": calibrated["log_loss"], "ece": calibrated["ece"], "calibration_bins": calibrated["bins"]}
    if len(set(labels.tolist())) < 2:
        result["auc"] = float("nan")  # undefined with one class present
    elif binary:
        result["auc"] = float(skm.roc_auc_score(labels, probabilities[:, 1]))
        fpr, tpr, thresholds = skm.roc_curve(labels, probabilities[:, 1])
        keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), MAX_ROC_POINTS)).astype(int))
        result["roc"] = {
            "fpr": fpr[keep].tolist(),
            "tpr": tpr[keep].tolist(),
            "thresholds": np.minimum(thresholds[keep], 1.0).tolist(),  # sklearn's first threshold is inf
        }
    else:
        result["auc"] = float(skm.roc_auc_score(labels, probabilities, multi_class="ovr", labels=range(len(class_names))))
    return result


def subset_metrics(labels: np.ndarray, probabilities: np.ndarray, mask: np.ndarray, name: str) -> dict:
    """{name}_n and, when it is not 0, {name}_accuracy on the photos where mask is True."""
    labels, mask = np.asarray(labels), np.asarray(mask, dtype=bool)
    if mask.shape != labels.shape:
        raise ValueError(f"{name}: mask of shape {mask.shape} for {labels.shape} labels")
    result = {f"{name}_n": int(mask.sum())}
    if mask.any():
        result[f"{name}_accuracy"] = float(skm.accuracy_score(labels[mask], probabilities[mask].argmax(axis=1)))
    return result


def metrics_by_origin(labels: np.ndarray, probabilities: np.ndarray, class_names: list[str], origins: list[str]) -> dict:
    """The metrics of the whole split plus feedback_n and feedback_accuracy (omitted when
    feedback_n is 0) on its photos that came from the feedback app; origins is parallel to labels."""
    result = classification_metrics(labels, probabilities, class_names)
    return result | subset_metrics(labels, probabilities, np.asarray(origins) == "feedback", "feedback")


def ood_metrics(predictor: OnnxPredictor, outputs: Outputs, ood_outputs: Outputs | None = None) -> dict:
    """ood_threshold and ood_false_reject_rate of the labelled photos' outputs, and with the outputs
    of photos that are neither (ood_outputs) detection_metrics; {} for a model without the score."""
    if not predictor.has_ood:
        if ood_outputs is not None:
            raise ValueError(f"the model in {predictor.model_dir} has no ood_score output (trained before "
                             "the neither score): it cannot be scored on OOD data; retrain it")
        return {}
    result = {"ood_threshold": predictor.ood_threshold, "ood_false_reject_rate": float(np.mean(outputs.neither))}
    if ood_outputs is not None:
        result |= detection_metrics(outputs.ood_score, ood_outputs.ood_score, predictor.ood_threshold)
    return result


def score_files(predictor: OnnxPredictor, files: list[tuple[Path, int]], batch_size: int = 64
                ) -> tuple[np.ndarray, Outputs, list[dict]]:
    """(labels, Outputs (probabilities, and the OOD score and flag when the model has them), skipped)
    for (path, label index) pairs, decoded and scored a batch at a time, so memory stays at one
    batch of pixels however many files there are (float32 pixels are 786 KB a photo at 256 px).
    Unreadable images are skipped with the reason."""
    labels, runs, skipped = [], [], []
    for start in range(0, len(files), batch_size):
        pixels = []
        for path, label in files[start:start + batch_size]:
            try:
                pixels.append(predictor.pixels(Path(path).read_bytes()))
                labels.append(label)
            except (InvalidImageError, OSError) as exc:
                skipped.append({"file": str(path), "reason": str(exc)})
        if pixels:
            runs.append(predictor.run_pixels(np.stack(pixels), batch_size=batch_size))
    if not labels:
        raise ValueError(f"no readable image among {len(files)} file(s)")
    outputs = Outputs(np.concatenate([r.probabilities for r in runs]))
    if predictor.has_ood:
        outputs.ood_score = np.concatenate([r.ood_score for r in runs])
        outputs.neither = np.concatenate([r.neither for r in runs])
    return np.array(labels), outputs, skipped


def files_explainer(predictor: OnnxPredictor, paths: list[Path]):
    """A gallery Explainer: the pixels and Grad-CAM maps of the files at the given indices."""
    def explain(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pixels = np.stack([predictor.pixels(Path(paths[i]).read_bytes()) for i in indices])
        return pixels, predictor.explain_pixels(pixels)[1]

    return explain


def evaluate_files(predictor: OnnxPredictor, files: list[tuple[Path, int]], ood_files: list[Path] | None = None) -> dict:
    """Metrics on (path, label index) pairs (unreadable images are skipped and counted), with
    ood_metrics; ood_files: photos that are neither class (their unreadable ones skipped too)."""
    labels, outputs, skipped = score_files(predictor, files)
    result = classification_metrics(labels, outputs.probabilities, predictor.class_names)
    ood_outputs = None
    if ood_files is not None:
        _, ood_outputs, ood_skipped = score_files(predictor, [(path, -1) for path in ood_files])
        skipped += ood_skipped
    result |= ood_metrics(predictor, outputs, ood_outputs)
    result["skipped"] = len(skipped)
    result["skipped_files"] = skipped
    return result


def image_files(folder: Path) -> list[Path]:
    """Every file under a folder (any layout), sorted: the OOD photos of make evaluate OOD_DATA=."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    if not files:
        raise ValueError(f"no files under {folder}")
    return files


def labelled_files(folder: Path, class_names: list[str], label_map: dict[str, str] | None = None) -> list[tuple[Path, int]]:
    """(path, label index) for every file under class folders (train/validation layouts included);
    label_map renames folders to labels as ingest does (e.g. {"cats": "cat"})."""
    _, layout = find_class_folders(Path(folder))
    files = []
    for folders in layout.values():
        classes = relabel(folders, label_map or {})
        unknown = sorted(set(classes) - set(class_names))
        if unknown:
            raise ValueError(f"{folder} has class folder(s) {unknown} the model does not know ({class_names})")
        for name, class_dir in classes.items():
            files += [(p, class_names.index(name)) for p in sorted(class_dir.rglob("*")) if p.is_file()]
    if not files:
        raise ValueError(f"no files under {folder}")
    return files


def print_summary(result: dict, model_desc: str, data_desc: str, out=None) -> None:
    out = out or sys.stdout  # resolved per call, so redirected stdout is honoured
    print(f"model: {model_desc}", file=out)
    print(f"data:  {data_desc}  ({result['n']} images, {result['skipped']} skipped)", file=out)
    for key in ("accuracy", "precision", "recall", "f1", "auc", "log_loss", "ece"):
        print(f"  {key:<9} {result[key]:.4f}", file=out)
    if "ood_threshold" in result:
        print(f"  neither:  threshold {result['ood_threshold']:.2f}, false rejects "
              f"{result['ood_false_reject_rate']:.2%} of these photos", file=out)
    if "ood_n" in result:
        print(f"  neither:  {result['ood_detection_rate']:.2%} of {result['ood_n']} OOD photos flagged, "
              f"AUROC {result['ood_auroc']:.4f}", file=out)
    names = result["class_names"]
    print("  confusion matrix (rows = true, columns = predicted): " + ", ".join(names), file=out)
    for name, row in zip(names, result["confusion_matrix"]):
        print(f"    {name:<8} {row}", file=out)
    for item in result["skipped_files"]:
        print(f"  skipped {item['file']}: {item['reason']}", file=out)


def main(argv: list[str] | None = None) -> int:
    """`make evaluate MODEL=<dir|champion|N> DATA=<folder>`: a summary, then one JSON line."""
    import argparse
    import json

    from catdog.ingest import parse_label_map
    from catdog.registry import RegistryError, resolve_model_dir

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--model", default="champion", help="model folder, 'champion' or a version number")
    parser.add_argument("--registry", default="registry", help="registry folder or gs:// prefix")
    parser.add_argument("--data", required=True, help="labelled folder: one sub-folder per class")
    parser.add_argument("--label-map", default=DEFAULT_LABEL_MAP,
                        help="folder=label renames, as the pipeline's label_map parameter")
    parser.add_argument("--ood-data", default=None,
                        help="a folder of photos that are neither class: the neither flag's detection rate and AUROC")
    args = parser.parse_args(argv)
    try:
        label_map = parse_label_map(args.label_map)
        model_dir, model_desc = resolve_model_dir(args.model, args.registry)
        predictor = OnnxPredictor(model_dir)
        ood_files = image_files(Path(args.ood_data)) if args.ood_data else None
        result = evaluate_files(predictor, labelled_files(Path(args.data), predictor.class_names, label_map), ood_files)
    except (RegistryError, IngestError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_summary(result, model_desc, args.data)
    keys = ("accuracy", "precision", "recall", "f1", "auc", "log_loss", "ece", "n", "skipped", "ood_threshold",
            "ood_false_reject_rate", "ood_n", "ood_detection_rate", "ood_auroc")
    summary = {k: result[k] for k in keys if k in result}
    summary = {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in summary.items()}  # strict JSON
    where = {"data": str(args.data)} | ({"ood_data": str(args.ood_data)} if args.ood_data else {})
    print(json.dumps({**summary, "model": model_desc, **where}, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
