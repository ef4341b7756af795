"""End to end with the data and the registry on gs://: the whole local pipeline against the emulator.

Issue: "Registry and data on GCS: the registry URI and the data may be gs://". A small synthetic
class-folder dataset is uploaded to gcp-storage-emulator (the ``gcs`` fixture sets
STORAGE_EMULATOR_HOST in os.environ, which kfp.local's subprocesses inherit) and the local copy is
deleted, so the pipeline can only have read it from gs://. The registry is a gs:// prefix too.
Nothing reaches the real network: in this process a socket may connect to loopback only; in the
step subprocesses any HTTP(S) request that is not for 127.0.0.1/localhost (NO_PROXY, set by
conftest) goes to a dead loopback proxy and fails; and any google-auth lookup fails at once
(GOOGLE_APPLICATION_CREDENTIALS names a missing file, NO_GCE_CHECK skips the metadata server).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from pipelines.config import build_config
from pipelines.local import describe_outputs, run_local
from tests.helpers import CLASS_COLORS, LOOPBACK, image_bytes, make_class_folders

PER_CLASS = {"cat": 12, "dog": 12}
DEAD_PROXY = f"http://{LOOPBACK}:9"  # the discard port: nothing listens there
pytestmark = [
    pytest.mark.slow,
    # kfp.local says these when it runs container settings in a subprocess; expected here
    pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:Task .* have no effect in the current local runner:UserWarning"),
]


@pytest.fixture
def loopback_only(monkeypatch):
    """In this process, a socket may connect to 127.0.0.1 / ::1 only."""
    connect = socket.socket.connect

    def guarded(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in (LOOPBACK, "::1", "localhost"):
            raise AssertionError(f"the test tried to reach {address}: only the emulator is allowed")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture
def gcs_run(gcs, tmp_path, monkeypatch, loopback_only):
    from catdog import storage

    # the step subprocesses: HTTP(S) anywhere but loopback (NO_PROXY) goes to a dead proxy and fails
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, DEAD_PROXY)
    # only the emulator: a real Google endpoint would need credentials, and these make any lookup fail fast
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-credentials.json"))
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test")
    monkeypatch.setenv("CATDOG_CACHE", str(tmp_path / "cache"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # the steps' registry cache and scratch stay in tmp_path
    assert os.environ["STORAGE_EMULATOR_HOST"] == gcs.host  # what the step subprocesses inherit

    local_data = make_class_folders(tmp_path / "data", PER_CLASS)
    data_uri = gcs.uri("data")
    storage.upload_tree(local_data, data_uri)
    shutil.rmtree(local_data)  # the pipeline can only read the images from gs://
    assert len(storage.list_files(data_uri)) == sum(PER_CLASS.values())

    registry_uri = gcs.uri("registry")
    config = build_config(
        {
            "data_uri": data_uri,
            "registry_uri": registry_uri,
            "image_size": "32",
            "weights": "none",
            "frozen_epochs": "1",
            "finetune_epochs": "1",
            "batch_size": "8",
            "run_id": "gcs-run-1",
        }
    )
    run_dir = run_local(config, tmp_path / "outputs")
    return run_dir, data_uri, registry_uri


def test_whole_pipeline_with_data_and_registry_on_gcs(gcs_run, tmp_path):
    from catdog import storage
    from catdog.onnx_predictor import OnnxPredictor
    from catdog.registry import ModelRegistry, decision_of_run, describe_decision

    run_dir, data_uri, registry_uri = gcs_run

    # ingest read every image from gs://
    report = json.loads((run_dir / "ingest" / "report_json").read_text())
    assert report["data_uri"] == data_uri
    assert report["class_counts"] == PER_CLASS

    # the registry on the emulator: one complete version, the champion alias, a history record
    version_files = {u.rsplit("/", 1)[1] for u in storage.list_files(f"{registry_uri}/versions/1")}
    assert {"model.onnx", "metadata.json", "_COMPLETE"} <= version_files
    champion = json.loads(storage.read_text(f"{registry_uri}/champion.json"))
    assert champion["version"] == 1
    history = storage.list_files(f"{registry_uri}/history")
    assert len(history) == 1 and history[0].endswith("-v1.run-gcs-run-1.json")  # named by the run's id
    record = json.loads(storage.read_text(history[0]))
    assert record["promoted"] is True and record["champion_version"] == 1 and record["run_id"] == "gcs-run-1"

    # the decision artifact and the runner's summary say promoted
    decision = json.loads((run_dir / "select-champion" / "decision_json").read_text())
    assert decision["promoted"] is True
    assert decision["challenger_version"] == 1 and decision["champion_version"] == 1
    assert decision["registry_uri"] == registry_uri
    assert decision["model_uri"] == f"{registry_uri}/versions/1"
    assert decision["history_record"] == history[0]
    assert decision_of_run(registry_uri, "gcs-run-1") == decision  # what make run reads back, by the run's id
    assert (run_dir / "deploy").is_dir()  # the promotion was deployed (deploy_local reads the gs:// alias)
    text = describe_outputs(run_dir, describe_decision("gcs-run-1", registry_uri, decision))
    assert "challenger v1 PROMOTED" in text
    assert f"champion: v1 in {registry_uri}" in text
    # the run's suspects and their photos beside the version, named by the alias (the feedback app reads them)
    assert champion["suspects_uri"] == decision["suspects_uri"] == f"{registry_uri}/suspects/v1/suspects.json"
    assert f"training photos to check: {decision['suspects_uri']}" in text
    suspects = json.loads(storage.read_text(decision["suspects_uri"]))
    assert suspects["run_id"] == "gcs-run-1" and suspects["suspects"]  # the outliers at least
    for entry in suspects["suspects"]:
        assert storage.exists(f"{registry_uri}/suspects/v1/{entry['photo']}")

    # the registry API sees the same, and the fetched version loads and predicts
    registry = ModelRegistry(registry_uri)
    assert registry.versions() == [1]
    assert registry.champion_version() == 1
    model_dir = registry.fetch(1, cache_dir=tmp_path / "registry-cache")
    assert (model_dir / "model.onnx").is_file()
    predictor = OnnxPredictor(Path(model_dir))
    assert sorted(predictor.class_names) == ["cat", "dog"]
    probabilities = predictor.predict_bytes([image_bytes(seed=99, color=CLASS_COLORS["cat"])])
    assert probabilities.shape == (1, 2)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-3)
