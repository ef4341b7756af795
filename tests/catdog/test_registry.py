"""The model registry: immutable numbered versions, the champion alias, history, and crash safety.

Atomicity tests simulate a crash halfway through a write (a copy that fails after the first file,
a failing rename, a half-written alias) and check that the previous champion stays whole and
loadable, and that no half-written version is ever listed as complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
from pathlib import Path

import pytest

from catdog import registry as registry_module
from catdog import storage
from catdog.model_files import KERAS_FILE, METADATA_FILE, ONNX_FILE
from catdog.onnx_predictor import OnnxPredictor
from catdog.registry import COMPLETE_MARKER, ModelRegistry, RegistryError, resolve_model_dir
from tests.helpers import image_bytes
from tests.model_fixtures import FailAfter
from tests.serving_fixtures import tiny_model_dir, variant_of

MODEL_FILES = sorted([KERAS_FILE, METADATA_FILE, ONNX_FILE])


def digest(folder: Path) -> dict[str, str]:
    """{relative file: sha256} of every file under a folder."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[Path]:
    """Three distinguishable model folders (the tiny model with different metadata)."""
    root = tmp_path_factory.mktemp("models")
    base = tiny_model_dir()
    return [variant_of(base, root / f"m{i}", architecture=f"model {i}") for i in range(1, 4)]


@pytest.fixture
def registry(tmp_path, models) -> ModelRegistry:
    """A local registry with v1 (champion) and v2."""
    reg = ModelRegistry(tmp_path / "registry")
    assert reg.register(models[0]) == 1
    reg.set_champion(1, metric="accuracy", score=0.9)
    assert reg.register(models[1]) == 2
    return reg


def alias_bytes(reg: ModelRegistry) -> bytes:
    return Path(reg.alias_uri).read_bytes()


def assert_champion_whole(reg: ModelRegistry, version: int, model_dir: Path, alias_before: bytes | None = None):
    """The alias names `version`, its files equal `model_dir`'s, and the ONNX model loads and predicts."""
    if alias_before is not None:
        assert alias_bytes(reg) == alias_before
    assert reg.champion_version() == version
    assert reg.resolve("champion") == version
    fetched = reg.fetch(version)
    assert digest(fetched) == {**digest(model_dir), COMPLETE_MARKER: digest(fetched)[COMPLETE_MARKER]}
    predictor = OnnxPredictor(fetched)
    probabilities = predictor.predict_bytes([image_bytes(seed=1)])
    assert probabilities.shape == (1, 2)


# -- versions -------------------------------------------------------------------------------------
def test_empty_registry(tmp_path):
    reg = ModelRegistry(tmp_path / "nothing-yet")
    assert reg.versions() == []
    assert reg.champion() is None and reg.champion_version() is None
    assert reg.history() == []
    with pytest.raises(RegistryError, match="no champion in .* yet"):
        reg.resolve("champion")
    assert not (tmp_path / "nothing-yet").exists()  # reading creates nothing


def test_versions_are_numbered_and_immutable(tmp_path, models):
    reg = ModelRegistry(tmp_path / "registry")
    source = tmp_path / "source"
    shutil.copytree(models[0], source)
    assert [reg.register(source), reg.register(models[1]), reg.register(models[2])] == [1, 2, 3]
    assert reg.versions() == [1, 2, 3]
    for version, model_dir in zip((1, 2, 3), (models[0], models[1], models[2])):
        files = digest(reg.version_uri(version))
        assert sorted(files) == sorted(MODEL_FILES + [COMPLETE_MARKER])
        assert {k: v for k, v in files.items() if k != COMPLETE_MARKER} == digest(model_dir)
    # a copy, not a link: changing the source later does not change the version
    before = digest(reg.version_uri(1))
    (source / METADATA_FILE).write_text("{}")
    assert digest(reg.version_uri(1)) == before
    # registering the same folder again makes a new version, it never overwrites one
    assert reg.register(models[0]) == 4
    assert digest(reg.version_uri(1)) == before
    assert not [p.name for p in Path(reg.uri, "versions").iterdir() if p.name.startswith(".")]  # no staging left


def test_a_version_without_marker_is_ignored_and_its_number_never_reused(registry, models):
    partial = Path(registry.uri, "versions", "3")
    shutil.copytree(models[2], partial)  # all files but no _COMPLETE: a crashed write
    staging = Path(registry.uri, "versions", ".staging-deadbeef")
    shutil.copytree(models[2], staging)
    (staging / COMPLETE_MARKER).write_text("x")  # a killed process's staging folder
    assert registry.versions() == [1, 2]
    with pytest.raises(RegistryError, match="version 3 not found"):
        registry.resolve("3")
    with pytest.raises(RegistryError, match="not a complete version"):
        registry.fetch(3)
    with pytest.raises(RegistryError, match="cannot promote version 3"):
        registry.set_champion(3)
    assert registry.register(models[2]) == 4
    assert registry.versions() == [1, 2, 4]


# -- the champion alias, resolve and fetch ------------------------------------------------------------
def test_champion_alias(registry, models):
    record = registry.champion()
    assert record["version"] == 1 and record["metric"] == "accuracy" and record["score"] == 0.9
    assert "promoted_at" in record
    assert json.loads(alias_bytes(registry)) == record
    registry.set_champion(2, previous_version=1)
    assert registry.champion_version() == 2 and registry.champion()["previous_version"] == 1
    with pytest.raises(RegistryError, match="cannot promote version 7"):
        registry.set_champion(7)
    assert registry.champion_version() == 2
    assert [p.name for p in Path(registry.uri).iterdir() if p.name.startswith(".")] == []  # no temp files


def test_resolve_and_fetch(registry, models):
    assert registry.resolve("champion") == 1
    assert registry.resolve("2") == 2 and registry.resolve(2) == 2
    with pytest.raises(RegistryError, match=r"version 9 not found .*\[1, 2\]"):
        registry.resolve("9")
    with pytest.raises(RegistryError, match="expected 'champion' or a version number, got 'latest'"):
        registry.resolve("latest")
    fetched = registry.fetch(2)
    assert fetched == Path(registry.uri, "versions", "2")
    assert json.loads((fetched / METADATA_FILE).read_text())["architecture"] == "model 2"


def test_resolve_model_dir(registry, models, tmp_path):
    folder, desc = resolve_model_dir(str(models[2]), registry.uri)
    assert folder == models[2] and desc == str(models[2])
    folder, desc = resolve_model_dir("champion", registry.uri)
    assert folder == Path(registry.uri, "versions", "1") and desc == f"{registry.uri} v1 (champion)"
    folder, desc = resolve_model_dir("2", registry.uri)
    assert folder == Path(registry.uri, "versions", "2") and desc == f"{registry.uri} v2"
    assert OnnxPredictor(folder).metadata["architecture"] == "model 2"
    with pytest.raises(RegistryError):
        resolve_model_dir(str(tmp_path / "no-such-model"), registry.uri)


def test_history_records(registry):
    assert registry.history() == []
    first = registry.record_decision({"challenger_version": 1, "promoted": True})
    second = registry.record_decision({"challenger_version": 2, "promoted": False})
    assert first != second and first.endswith("-v1.json") and second.endswith("-v2.json")
    assert Path(first).parent == Path(registry.uri, "history")
    assert registry.history() == [{"challenger_version": 1, "promoted": True},
                                  {"challenger_version": 2, "promoted": False}]


# -- atomicity --------------------------------------------------------------------------------------
def test_copy_failing_halfway_through_register_leaves_the_champion_whole(registry, models, monkeypatch):
    before = alias_bytes(registry)
    failing = FailAfter(shutil.copyfile, n_ok=1)  # copytree -> copy2 -> copyfile: the 2nd file fails
    monkeypatch.setattr(shutil, "copyfile", failing)
    with pytest.raises(OSError, match="No space left"):
        registry.register(models[2])
    assert failing.calls == 3  # copytree tries every file and raises shutil.Error (an OSError) at the end
    monkeypatch.undo()
    assert registry.versions() == [1, 2]
    assert sorted(p.name for p in Path(registry.uri, "versions").iterdir()) == ["1", "2"]  # staging removed
    assert_champion_whole(registry, 1, models[0], before)
    assert registry.register(models[2]) == 3  # the registry still works afterwards
    assert digest(registry.version_uri(3))[ONNX_FILE] == digest(models[2])[ONNX_FILE]


def test_crash_before_the_marker_or_the_rename_publishes_nothing(registry, models, monkeypatch):
    before = alias_bytes(registry)

    def crash(*_args, **_kwargs):
        raise OSError(5, "Input/output error (simulated)")

    monkeypatch.setattr(registry_module, "_now", crash)  # the marker's content: fails after the copy
    with pytest.raises(OSError, match="Input/output"):
        registry.register(models[2])
    monkeypatch.undo()
    monkeypatch.setattr(registry_module.os, "rename", crash)  # the publishing rename fails
    with pytest.raises(OSError, match="Input/output"):
        registry.register(models[2])
    monkeypatch.undo()
    assert registry.versions() == [1, 2]
    assert sorted(p.name for p in Path(registry.uri, "versions").iterdir()) == ["1", "2"]
    assert_champion_whole(registry, 1, models[0], before)


def test_failing_alias_replace_keeps_the_old_alias(registry, models, monkeypatch):
    before = alias_bytes(registry)
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(dst).name == "champion.json":
            raise OSError(28, "No space left on device (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(storage.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        registry.set_champion(2)
    monkeypatch.undo()
    assert_champion_whole(registry, 1, models[0], before)
    assert registry.versions() == [1, 2]


def test_half_written_alias_never_replaces_the_old_one(registry, models, monkeypatch):
    """The write itself dies halfway (half the bytes on disk): the alias is untouched."""
    before = alias_bytes(registry)
    real_write_bytes = pathlib.Path.write_bytes

    def half_write(self, data):
        real_write_bytes(self, data[: len(data) // 2])
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(pathlib.Path, "write_bytes", half_write)
    with pytest.raises(OSError, match="No space left"):
        registry.set_champion(2)
    monkeypatch.undo()
    assert_champion_whole(registry, 1, models[0], before)
    registry.set_champion(2)  # and a later promotion succeeds
    assert registry.champion_version() == 2


def test_failed_promotion_in_select_champion_keeps_the_champion(registry, models, monkeypatch, tmp_path):
    """select_champion with a copy failing halfway: no new version, alias and history unchanged."""
    from catdog.champion import select_champion
    from tests.helpers import make_class_folders

    before = alias_bytes(registry)
    folder = make_class_folders(tmp_path / "test-photos", {"cat": 2, "dog": 2})
    files = [(p, p.parent.name) for p in sorted(folder.rglob("*.jpg"))]
    metrics = {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0, "auc": 1.0,
               "n": len(files), "class_names": ["cat", "dog"]}
    monkeypatch.setattr(shutil, "copyfile", FailAfter(shutil.copyfile, n_ok=1))
    with pytest.raises(OSError, match="No space left"):
        select_champion(registry, models[2], metrics, files, "accuracy", 0.0)
    monkeypatch.undo()
    assert registry.versions() == [1, 2]
    assert registry.history() == []
    assert_champion_whole(registry, 1, models[0], before)


# -- the same on a gs:// registry (gcp-storage-emulator) ---------------------------------------------
def test_gcs_register_promote_resolve_fetch(gcs, models, tmp_path):
    reg = ModelRegistry(gcs.uri("registry") + "/")
    assert reg.uri == gcs.uri("registry")
    assert reg.versions() == [] and reg.champion() is None
    assert [reg.register(models[0]), reg.register(models[1])] == [1, 2]
    assert reg.versions() == [1, 2]
    assert storage.list_files(reg.version_uri(2)) == [
        reg.version_uri(2) + "/" + name for name in sorted([COMPLETE_MARKER, *MODEL_FILES])
    ]
    reg.set_champion(1, metric="accuracy")
    assert json.loads(storage.read_text(gcs.uri("registry", "champion.json")))["version"] == 1
    assert reg.resolve("champion") == 1 and reg.resolve("2") == 2
    with pytest.raises(RegistryError, match="version 5 not found"):
        reg.resolve(5)
    fetched = reg.fetch(1, cache_dir=tmp_path / "cache")
    assert str(fetched).startswith(str(tmp_path / "cache"))
    assert {k: v for k, v in digest(fetched).items() if k != COMPLETE_MARKER} == digest(models[0])
    assert OnnxPredictor(fetched).predict_bytes([image_bytes()]).shape == (1, 2)
    folder, desc = resolve_model_dir("champion", reg.uri)
    assert desc == f"{reg.uri} v1 (champion)" and (folder / ONNX_FILE).is_file()
    reg.set_champion(2)
    assert reg.resolve("champion") == 2
    reg.record_decision({"challenger_version": 2, "promoted": True})
    assert reg.history() == [{"challenger_version": 2, "promoted": True}]


def test_gcs_upload_failing_halfway_leaves_the_champion_whole(gcs, models, tmp_path, monkeypatch):
    from google.cloud.storage import Blob

    reg = ModelRegistry(gcs.uri("registry"))
    reg.register(models[0])
    reg.set_champion(1)
    before = storage.read_bytes(reg.alias_uri)
    monkeypatch.setattr(Blob, "upload_from_filename", FailAfter(Blob.upload_from_filename, n_ok=1))
    with pytest.raises(OSError, match="No space left"):
        reg.register(models[1])
    monkeypatch.undo()
    assert len(storage.list_files(reg.version_uri(2))) == 1  # half a version is there ...
    assert reg.versions() == [1]  # ... but never listed
    with pytest.raises(RegistryError):
        reg.resolve(2)
    assert storage.read_bytes(reg.alias_uri) == before
    assert reg.resolve("champion") == 1
    fetched = reg.fetch(1, cache_dir=tmp_path / "cache")
    assert {k: v for k, v in digest(fetched).items() if k != COMPLETE_MARKER} == digest(models[0])
    OnnxPredictor(fetched)
    new = reg.register(models[1])  # a retry completes a version with exactly the new files
    assert reg.versions() == [1, new]
    fetched = reg.fetch(new, cache_dir=tmp_path / "cache")
    assert {k: v for k, v in digest(fetched).items() if k != COMPLETE_MARKER} == digest(models[1])


def test_gcs_fetch_interrupted_is_not_mistaken_for_a_complete_cache(gcs, models, tmp_path, monkeypatch):
    from google.cloud.storage import Blob

    reg = ModelRegistry(gcs.uri("registry"))
    reg.register(models[0])
    monkeypatch.setattr(Blob, "download_to_filename", FailAfter(Blob.download_to_filename, n_ok=1))
    with pytest.raises(OSError):
        reg.fetch(1, cache_dir=tmp_path / "cache")
    monkeypatch.undo()
    fetched = reg.fetch(1, cache_dir=tmp_path / "cache")
    assert (fetched / ONNX_FILE).is_file() and (fetched / METADATA_FILE).is_file()
