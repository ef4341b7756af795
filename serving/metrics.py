"""Prometheus metrics of the predictor, served on /metrics next to KServe's own histograms.

Defined once per process (prometheus_client's default registry), so several apps in one process
(the tests) share them. Every inference metric carries the model version that answered; requests
and their time also carry the verb: "predict" (:predict, V2 infer) or "explain" (V1 :explain, the
classification plus its Grad-CAM or occlusion maps). Both verbs count their images and batch sizes.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # no *_created series: half the lines of /metrics, no information

MODEL_INFO = Gauge(
    "catdog_model_info",
    "The model being served (value 1; the labels say which version and from where)",
    ["model_name", "model_version", "source"],
)
MODEL_LOADS = Counter(
    "catdog_model_loads_total",
    "Model loads and reloads, by outcome",
    ["model_name", "outcome"],
)
REQUESTS = Counter(
    "catdog_inference_requests_total",
    "Inference requests answered with predictions, by verb (predict or explain)",
    ["model_name", "model_version", "protocol", "verb"],
)
IMAGES = Counter(
    "catdog_inference_images_total",
    "Images classified, by predicted label",
    ["model_name", "model_version", "label"],
)
BATCH_SIZE = Histogram(
    "catdog_inference_batch_size",
    "Images per inference request (one request = one batch)",
    ["model_name", "model_version"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
INFERENCE_SECONDS = Histogram(
    "catdog_inference_seconds",
    "Decode + preprocess + ONNX Runtime time of one request, including the wait for an inference thread "
    "(explain: also its maps), by verb (predict or explain)",
    ["model_name", "model_version", "protocol", "verb"],
    buckets=(0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
REJECTED = Counter(
    "catdog_rejected_requests_total",
    "Requests refused as invalid (4xx), by HTTP status",
    ["status"],
)
HTTP_RESPONSES = Counter(
    "catdog_http_responses_total",
    "HTTP responses of the server, by status code",
    ["code"],
)
