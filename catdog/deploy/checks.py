"""What every deploy target checks before it changes what is served, and the errors it raises.

DeployError: nothing was changed (the model or the manifest failed a check before any mutating
call); ManifestError: a manifest that does not render or is not a valid InferenceService.
verify_model: a model folder (local or gs://) holds model.onnx + metadata.json (+ centre.onnx) that load and predict.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from catdog import storage
from catdog.model_files import METADATA_FILE, load_metadata, serving_files


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
        _fetch(model_uri, METADATA_FILE, Path(tmp))  # first: it names the other files (serving_files)
        try:
            names = serving_files(load_metadata(Path(tmp)))
        except ValueError as exc:  # not JSON, or a bad centre file name
            raise DeployError(f"{storage.join(model_uri, METADATA_FILE)}: {exc}") from exc
        for name in names:
            if name != METADATA_FILE:
                _fetch(model_uri, name, Path(tmp))
        return smoke_test(Path(tmp))


def _fetch(model_uri: str, name: str, local_dir: Path) -> None:
    uri = storage.join(model_uri, name)
    try:
        data = storage.read_bytes(uri)
    except Exception as exc:  # NotFound, Forbidden, network
        raise DeployError(f"cannot read {uri}: {type(exc).__name__}: {exc}") from exc
    (local_dir / name).write_bytes(data)


def require_gcs(model_uri: str, target: str) -> None:
    if not storage.is_gcs(model_uri):
        raise DeployError(f"{target} reads the model from a gs:// folder, got {model_uri!r}: "
                          "use a gs:// registry (registry_uri=gs://BUCKET/registry)")


def version_tag(model_uri: str) -> str:
    """'gs://b/registry/versions/7' -> 'v7' (else the folder's name)."""
    last = model_uri.rstrip("/").rsplit("/", 1)[-1]
    return f"v{last}" if last.isdigit() else last
