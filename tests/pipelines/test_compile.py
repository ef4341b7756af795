"""The checked-in compiled pipeline matches its source, and compiling is deterministic."""

from __future__ import annotations

import pytest
import yaml

from pipelines.compile import PIPELINE_YAML, compile_pipeline
from pipelines.config import PipelineConfig


def load_spec(path) -> dict:
    """The parsed IR without the SDK version (KFP's own tests compare specs this way)."""
    spec = yaml.safe_load(path.read_text())
    spec.pop("sdkVersion", None)
    return spec


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return compile_pipeline(tmp_path_factory.mktemp("compiled") / "training_pipeline.yaml")


def test_checked_in_yaml_matches_source(compiled):
    assert PIPELINE_YAML.is_file(), f"{PIPELINE_YAML} is missing: run make compile"
    assert load_spec(compiled) == load_spec(PIPELINE_YAML), (
        f"{PIPELINE_YAML.name} is out of date with pipelines/training_pipeline.py: run make compile"
    )


def test_compile_is_deterministic(compiled, tmp_path):
    again = compile_pipeline(tmp_path / "again.yaml")
    assert again.read_text() == compiled.read_text()


def test_compiled_spec_shape(compiled):
    spec = load_spec(compiled)
    assert spec["pipelineInfo"]["name"] == "catdog-training"
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert set(parameters) == set(PipelineConfig.model_fields)
    assert parameters["image_size"]["defaultValue"] == PipelineConfig().image_size
    assert parameters["augmentations"]["defaultValue"] == PipelineConfig().augmentations
    tasks = spec["root"]["dag"]["tasks"]
    assert {"ingest", "preprocess"} <= set(tasks)
    assert tasks["preprocess"]["dependentTasks"] == ["ingest"]
    executors = spec["deploymentSpec"]["executors"]
    assert all(e["container"]["image"] == "catdog-components:0.1.0" for e in executors.values())
