"""evaluate: test-split metrics of the trained model, as KFP Metrics and ClassificationMetrics,
a gallery of where it looks (Grad-CAM) on the photos it got wrong and some it got right, and a
reliability diagram (calibration: log loss and ECE are among the metrics, as is the share of test
photos the "neither" score flags, ood_false_reject_rate, for a model that has it)."""

from kfp import dsl
from kfp.dsl import (
    HTML,
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Metrics,
    Model,
    Output,
)

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    ingested: Input[Dataset],
    dataset: Input[Dataset],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    evaluation: Output[Artifact],
    gallery: Output[HTML],
    reliability: Output[HTML],
):
    """Score the ONNX export (what is served) on the held-out test split, and on its feedback photos;
    draw its Grad-CAM maps on the photos it got wrong and on a sample it got right.

    The test photos are read from the ingested files through the server's preprocessing (as
    select-champion scores the champion), a batch at a time: memory does not grow with the split.
    """
    import json
    from pathlib import Path

    from catdog.champion import test_split_files
    from catdog.dataset import load_metadata, split_origins
    from catdog.calibration import reliability_html
    from catdog.evaluation import files_explainer, metrics_by_origin, ood_metrics, score_files
    from catdog.gallery import gallery_html
    from catdog.onnx_predictor import OnnxPredictor

    predictor = OnnxPredictor(Path(model.path))
    files = [(path, predictor.class_names.index(label))
             for path, label in test_split_files(Path(ingested.path), Path(dataset.path))]
    labels, outputs, skipped = score_files(predictor, files)
    probabilities = outputs.probabilities
    if skipped:  # ingest validated every one of them: a file changed or vanished since
        raise ValueError(f"{len(skipped)} test photo(s) unreadable since ingest: {skipped[:3]}")
    origins = split_origins(load_metadata(Path(dataset.path)), "test")
    result = metrics_by_origin(labels, probabilities, predictor.class_names, origins) | ood_metrics(predictor, outputs)
    # the served model's confidence on each test photo: the dashboard's reference for drift
    result["test_confidences"] = [round(float(p), 4) for p in probabilities.max(axis=1)]
    explain = files_explainer(predictor, [path for path, _ in files]) if predictor.has_gradcam else None
    Path(gallery.path).write_text(gallery_html(labels, probabilities, explain, predictor.class_names))
    Path(reliability.path).write_text(reliability_html({"bins": result["calibration_bins"], **result}))
    for key in ("accuracy", "precision", "recall", "f1", "auc", "log_loss", "ece", "ood_false_reject_rate"):
        if key in result:  # ood_false_reject_rate: a model with the neither score only
            metrics.log_metric(key, result[key])
    metrics.log_metric("n", result["n"])
    metrics.log_metric("feedback_n", result["feedback_n"])
    if "feedback_accuracy" in result:  # no feedback photo in the test split: no accuracy to report
        metrics.log_metric("feedback_accuracy", result["feedback_accuracy"])
    classification.log_confusion_matrix(result["class_names"], result["confusion_matrix"])
    if "roc" in result:
        classification.log_roc_curve(result["roc"]["fpr"], result["roc"]["tpr"], result["roc"]["thresholds"])
    Path(evaluation.path).write_text(json.dumps(result, indent=1))
    shown = ("n", "accuracy", "precision", "recall", "f1", "auc", "log_loss", "ece", "ood_false_reject_rate",
             "feedback_n", "feedback_accuracy")
    print({k: result[k] for k in shown if k in result})
