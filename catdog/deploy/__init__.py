"""Deploy a newly promoted champion. Runs only when the champion step promoted a challenger.

Three targets, one rule: everything that can be checked is checked BEFORE the first call that
changes what is served (the model folder has model.onnx + metadata.json (+ centre.onnx), loads and predicts; the
manifest renders and is a valid InferenceService), and a failure after that leaves the previous
model serving:

- ``deploy_local``: `make serve` (MODEL=champion) follows the registry's champion alias, so
  deploying means checking the alias and a smoke prediction.
- ``deploy_kserve``: creates or merge-patches a KServe ``InferenceService`` (our predictor image as a
  custom container; KServe's storage initializer downloads ``STORAGE_URI`` to /mnt/models). With
  ``canary_percent`` the new revision gets that share and the previous one keeps the rest; a new
  revision that never becomes ready gets no traffic (KServe keeps routing to the last ready one).
- ``deploy_vertex``: uploads the model as a new version of the Vertex Model Registry model, deploys
  it to the endpoint with a traffic share, then moves the ``default`` and ``champion`` aliases to
  it; the models already deployed keep serving until the new one is up, and are retired only after
  a full (100 %) rollout.

The manifests (manifests/base, manifests/overlays/*) are rendered here by a small subset of
kustomize (resources, namespace, patches, images), so the deploy step needs no kustomize binary;
tests/manifests/test_manifests.py checks that it agrees with `kubectl kustomize` where one is installed.

One module per target over the shared checks: local.py, kserve.py (with kustomize.py, the manifests'
renderer), vertex.py; checks.py holds the model checks and the errors. The deploy component
(components/deploy.py) calls deploy_local, deploy_kserve and deploy_vertex from this package.
"""

from catdog.deploy.checks import DeployError, ManifestError, verify_model
from catdog.deploy.kserve import deploy_kserve, inference_service_body, validate_inference_service, wait_until_ready
from catdog.deploy.kustomize import merge_patch, render
from catdog.deploy.local import deploy_local
from catdog.deploy.vertex import VERTEX_HEALTH_ROUTE, VERTEX_PREDICT_ROUTE, deploy_vertex

__all__ = [
    "DeployError", "ManifestError", "VERTEX_HEALTH_ROUTE", "VERTEX_PREDICT_ROUTE", "deploy_kserve", "deploy_local",
    "deploy_vertex", "inference_service_body", "merge_patch", "render", "validate_inference_service",
    "verify_model", "wait_until_ready",
]
