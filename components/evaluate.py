"""evaluate: test-split metrics of the trained model, as KFP Metrics and ClassificationMetrics,
and a gallery of where it looks (Grad-CAM) on the photos it got wrong and some it got right."""

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
    dataset: Input[Dataset],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    evaluation: Output[Artifact],
    gallery: Output[HTML],
):
    """Score the ONNX export (what is served) on the held-out test split, and on its feedback photos;
    draw its Grad-CAM maps on the photos it got wrong and on a sample it got right."""
    import json
    from pathlib import Path

    from catdog.dataset import load_metadata, load_split_arrays, split_origins
    from catdog.evaluation import metrics_by_origin
    from catdog.gallery import gallery_html
    from catdog.predictor import OnnxPredictor

    pixels, labels = load_split_arrays(Path(dataset.path), "test")
    origins = split_origins(load_metadata(Path(dataset.path)), "test")
    predictor = OnnxPredictor(Path(model.path))
    if predictor.has_gradcam:  # one pass gives both (the maps cost nothing more)
        probabilities, maps = predictor.explain_pixels(pixels)
    else:
        probabilities, maps = predictor.predict_pixels(pixels), None
    result = metrics_by_origin(labels, probabilities, predictor.class_names, origins)
    # the served model's confidence on each test photo: the dashboard's reference for drift
    result["test_confidences"] = [round(float(p), 4) for p in probabilities.max(axis=1)]
    Path(gallery.path).write_text(gallery_html(pixels, labels, probabilities, maps, predictor.class_names))
    for key in ("accuracy", "precision", "recall", "f1", "auc"):
        metrics.log_metric(key, result[key])
    metrics.log_metric("n", result["n"])
    metrics.log_metric("feedback_n", result["feedback_n"])
    if "feedback_accuracy" in result:  # no feedback photo in the test split: no accuracy to report
        metrics.log_metric("feedback_accuracy", result["feedback_accuracy"])
    classification.log_confusion_matrix(result["class_names"], result["confusion_matrix"])
    if "roc" in result:
        classification.log_roc_curve(result["roc"]["fpr"], result["roc"]["tpr"], result["roc"]["thresholds"])
    Path(evaluation.path).write_text(json.dumps(result, indent=1))
    shown = ("n", "accuracy", "precision", "recall", "f1", "auc", "feedback_n", "feedback_accuracy")
    print({k: result[k] for k in shown if k in result})
