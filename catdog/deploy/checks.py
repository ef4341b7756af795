"""What every deploy target checks before it changes what is served, and the errors it raises.

DeployError: nothing was changed (the model or the manifest failed a check before any mutating
call); ManifestError: a manifest that does not render or is not a valid InferenceService.
verify_model: a model folder (local or gs://) holds model.onnx + metadata.json (+ centre.onnx) that load and predict.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from catdog import storage
from catdog.model_files import METADATA_FILE, ONNX_FILE, serving_files


class DeployError(RuntimeError):
    """Nothing was changed: the model or the manifest failed a check before any mutating call."""


class ManifestError(DeployError):
    """A manifest that does not render, or is not a valid InferenceService."""


# --- the model ---------------------------------------------------------------------------------

def smoke_test(model_dir: Path) -> dict:
    """Load a local model folder's ONNX and predict one blank image; returns its metadata."""
    from catdog.onnx_predictor import load_checked  # ONNX Runtime: only the deploy step needs it here

    try:
        return load_checked(Path(model_dir)).metadata
    except ValueError as exc:
        raise DeployError(str(exc)) from exc


def verify_model(model_uri: str) -> dict:
    """A model folder (local or gs://) holds model.onnx + metadata.json (and centre.onnx for a model
    with a centre view) that load and predict.

    For gs:// only those files are downloaded (to a temporary folder). Returns the metadata.
    """
    if not storage.is_gcs(model_uri):
        return smoke_test(Path(model_uri))
    with tempfile.TemporaryDirectory(prefix="catdog-deploy-") as tmp:
        for name in serving_files(_read_metadata(model_uri)):
            uri = storage.join(model_uri, name)
            try:
                data = storage.read_bytes(uri)
            except Exception as exc:  # NotFound, Forbidden, network
                raise DeployError(f"cannot read {uri}: {type(exc).__name__}: {exc}") from exc
            Path(tmp, name).write_bytes(data)
        return smoke_test(Path(tmp))


def _read_metadata(model_uri: str) -> dict:
    uri = storage.join(model_uri, METADATA_FILE)
    try:
        return json.loads(storage.read_bytes(uri))
    except Exception as exc:  # NotFound, Forbidden, network, not JSON
        raise DeployError(f"cannot read {uri}: {type(exc).__name__}: {exc}") from exc


def require_gcs(model_uri: str, target: str) -> None:
    if not storage.is_gcs(model_uri):
        raise DeployError(f"{target} reads the model from a gs:// folder, got {model_uri!r}: "
                          "use a gs:// registry (registry_uri=gs://BUCKET/registry)")


def version_tag(model_uri: str) -> str:
    """'gs://b/registry/versions/7' -> 'v7' (else the folder's name)."""
    last = model_uri.rstrip("/").rsplit("/", 1)[-1]
    return f"v{last}" if last.isdigit() else last
