"""TRAIN_CPU, TRAIN_MEMORY, TRAIN_ACCELERATOR(_COUNT): checked, then written into the train step's
container.resources of the submitted YAML in the shape KFP 2.17's task setters compile to.

Remote clients are the mocks of tests/remote_fixtures.py; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import pytest
import yaml
from kfp import compiler, dsl

from pipelines import remote as sub
from pipelines.compile import PIPELINE_YAML
from pipelines.hardware import (
    AS_COMPILED,
    TrainHardware,
    parse_train_hardware,
    size_train_step,
)
from pipelines.run import main as run_main
from tests.remote_fixtures import IMAGE, VERTEX_ARGS, kfp_api, kubeflow_args, vertex  # noqa: F401

COMPILED = yaml.safe_load(PIPELINE_YAML.read_text())
T4 = ["TRAIN_CPU=8", "TRAIN_MEMORY=32G", "TRAIN_ACCELERATOR=NVIDIA_TESLA_T4", "TRAIN_ACCELERATOR_COUNT=1"]


def executors(spec: dict) -> dict:
    return spec["deploymentSpec"]["executors"]


def train_resources(spec: dict) -> dict:
    return executors(spec)["exec-train"]["container"]["resources"]


def kfp_compiled_resources(tmp_path, cpu: str, memory: str, accelerator: str, count: int) -> dict:
    """What KFP itself writes for a task with these setters (a one-step pipeline, compiled here)."""
    @dsl.component(base_image="python:3.11")
    def step():
        pass

    @dsl.pipeline(name="sized")
    def sized():
        task = step()
        if cpu:
            task.set_cpu_limit(cpu)
        if memory:
            task.set_memory_limit(memory)
        if accelerator:
            task.set_accelerator_type(accelerator).set_accelerator_limit(count)

    compiler.Compiler().compile(sized, str(tmp_path / "sized.yaml"))
    return executors(yaml.safe_load((tmp_path / "sized.yaml").read_text()))["exec-step"]["container"]["resources"]


@pytest.mark.parametrize("cpu, memory, accelerator, count", [
    ("8", "32G", "NVIDIA_TESLA_T4", 1),
    ("500m", "1536Mi", "", 0),
    ("2.5", "16Gi", "nvidia.com/gpu", 2),
    ("", "", "NVIDIA_L4", 4),
    ("96", "624G", "", 0),
    ("1", "512M", "", 0),
    ("4", "1Ti", "amd.com/gpu", 8),
])
def test_resources_have_the_shape_kfp_compiles(tmp_path, cpu, memory, accelerator, count):
    hardware = TrainHardware(cpu, memory, accelerator, count)
    assert hardware.resources({}) == kfp_compiled_resources(tmp_path, cpu, memory, accelerator, count)


def test_the_compiled_train_step_is_what_training_pipeline_sets():
    assert train_resources(COMPILED) == TrainHardware("4", "8G").resources({})


@pytest.mark.parametrize("target, settings, expected", [
    ("vertex", {"TRAIN_CPU": "8", "TRAIN_MEMORY": "32G"}, TrainHardware("8", "32G")),
    ("vertex", {"TRAIN_ACCELERATOR": "NVIDIA_TESLA_T4"}, TrainHardware("", "", "NVIDIA_TESLA_T4", 1)),
    ("vertex", {"TRAIN_ACCELERATOR": "NVIDIA_H100_80GB", "TRAIN_ACCELERATOR_COUNT": "8"},
     TrainHardware("", "", "NVIDIA_H100_80GB", 8)),
    ("kubeflow", {"TRAIN_CPU": "500m", "TRAIN_MEMORY": "16Gi", "TRAIN_ACCELERATOR": "nvidia.com/gpu",
                  "TRAIN_ACCELERATOR_COUNT": "2"}, TrainHardware("500m", "16Gi", "nvidia.com/gpu", 2)),
    ("kubeflow", {}, AS_COMPILED),
])
def test_good_settings(target, settings, expected):
    assert parse_train_hardware(target, settings) == (expected, [])


@pytest.mark.parametrize("target, settings, problem", [
    ("vertex", {"TRAIN_CPU": "eight"}, "TRAIN_CPU=eight: give a number of CPUs, e.g. TRAIN_CPU=8, 0.5 or 500m"),
    ("vertex", {"TRAIN_CPU": "0"}, "TRAIN_CPU=0: give a number of CPUs"),
    ("vertex", {"TRAIN_CPU": "-2"}, "TRAIN_CPU=-2: give a number of CPUs"),
    ("vertex", {"TRAIN_MEMORY": "32"}, "TRAIN_MEMORY=32: give an amount with its unit, e.g. TRAIN_MEMORY=32G"),
    ("vertex", {"TRAIN_MEMORY": "32GB"}, "TRAIN_MEMORY=32GB: give an amount with its unit"),
    ("vertex", {"TRAIN_MEMORY": "1.5G"}, "TRAIN_MEMORY=1.5G: give an amount with its unit"),
    ("vertex", {"TRAIN_MEMORY": "0G"}, "TRAIN_MEMORY=0G: give an amount with its unit"),
    ("vertex", {"TRAIN_ACCELERATOR": "NVIDIA_TESLA_T4", "TRAIN_ACCELERATOR_COUNT": "0"},
     "TRAIN_ACCELERATOR_COUNT=0: give a whole number of accelerators, 1 or more"),
    ("vertex", {"TRAIN_ACCELERATOR": "NVIDIA_TESLA_T4", "TRAIN_ACCELERATOR_COUNT": "two"},
     "TRAIN_ACCELERATOR_COUNT=two: give a whole number"),
    ("vertex", {"TRAIN_ACCELERATOR_COUNT": "1"}, "TRAIN_ACCELERATOR_COUNT is set without TRAIN_ACCELERATOR"),
    ("vertex", {"TRAIN_ACCELERATOR": "T4"},
     "TRAIN_ACCELERATOR=T4 is not a Vertex AI GPU type; choose one of NVIDIA_TESLA_K80, NVIDIA_TESLA_P100"),
    ("vertex", {"TRAIN_ACCELERATOR": "TPU_V3"}, "TRAIN_ACCELERATOR=TPU_V3 is not a Vertex AI GPU type"),
    ("vertex", {"TRAIN_ACCELERATOR": "nvidia.com/gpu"}, "TRAIN_ACCELERATOR=nvidia.com/gpu is not a Vertex AI GPU"),
    ("kubeflow", {"TRAIN_ACCELERATOR": "NVIDIA_TESLA_T4"},
     ("TRAIN_ACCELERATOR=NVIDIA_TESLA_T4: on Kubeflow give the Kubernetes resource name of the device, "
      "e.g. nvidia.com/gpu")),
])
def test_bad_settings_are_named(target, settings, problem):
    hardware, problems = parse_train_hardware(target, settings)
    assert hardware == AS_COMPILED
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_every_problem_is_reported_at_once():
    _, problems = parse_train_hardware("vertex", {"TRAIN_CPU": "x", "TRAIN_MEMORY": "8", "TRAIN_ACCELERATOR_COUNT": "1"})
    assert [p.split("=")[0].split(" ")[0] for p in problems] == ["TRAIN_CPU", "TRAIN_MEMORY", "TRAIN_ACCELERATOR_COUNT"]


def test_size_train_step_changes_the_train_executor_only(tmp_path):
    package = tmp_path / "pipeline.yaml"
    package.write_text(PIPELINE_YAML.read_text())
    size_train_step(package, TrainHardware("8", "32G", "NVIDIA_TESLA_T4", 1))
    spec = yaml.safe_load(package.read_text())
    assert train_resources(spec) == TrainHardware("8", "32G", "NVIDIA_TESLA_T4", 1).resources({})
    executors(spec)["exec-train"]["container"]["resources"] = train_resources(COMPILED)
    assert spec == COMPILED


def test_a_pipeline_without_the_train_task_is_refused(tmp_path):
    spec = yaml.safe_load(PIPELINE_YAML.read_text())
    del spec["root"]["dag"]["tasks"]["train"]
    stale = tmp_path / "stale.yaml"
    stale.write_text(yaml.safe_dump(spec))
    with (pytest.raises(sub.SubmitError, match=r"stale.yaml: no 'train' task with a container: run make compile"),
          sub.pipeline_package(IMAGE, TrainHardware("8"), source=stale)):
        pass


def test_pipeline_package_sizes_the_train_step_in_the_copy_only():
    original = PIPELINE_YAML.read_text()
    with sub.pipeline_package(IMAGE, TrainHardware("16", "64G")) as package:
        spec = yaml.safe_load(package.read_text())
    assert train_resources(spec) == TrainHardware("16", "64G").resources({})
    assert PIPELINE_YAML.read_text() == original


# --- through `make run` to the (mocked) clients --------------------------------------------------

def test_vertex_job_template_carries_the_train_hardware(vertex):
    assert run_main([*VERTEX_ARGS, *T4]) == 0
    [template] = vertex.templates
    assert train_resources(template) == {
        "accelerator": {"count": "1", "resourceCount": "1", "resourceType": "NVIDIA_TESLA_T4", "type": "NVIDIA_TESLA_T4"},
        "cpuLimit": 8.0, "memoryLimit": 32.0, "resourceCpuLimit": "8", "resourceMemoryLimit": "32G",
    }
    for name, executor in executors(template).items():  # every other step keeps its compiled container
        if name != "exec-train":
            assert executor["container"] == {**executors(COMPILED)[name]["container"], "image": IMAGE}, name


def test_kubeflow_package_carries_the_train_hardware(kfp_api):
    args = kubeflow_args(kfp_api.host, "TRAIN_CPU=6", "TRAIN_MEMORY=24Gi", "TRAIN_ACCELERATOR=nvidia.com/gpu",
                         "TRAIN_ACCELERATOR_COUNT=2")
    assert run_main(args) == 0
    [package] = kfp_api.packages
    resources = train_resources(package)
    assert resources["accelerator"] == {"count": "2", "resourceCount": "2", "resourceType": "nvidia.com/gpu",
                                        "type": "nvidia.com/gpu"}
    assert (resources["resourceCpuLimit"], resources["resourceMemoryLimit"]) == ("6", "24Gi")
    assert resources["memoryLimit"] == pytest.approx(25.769803776)


def test_an_accelerator_alone_keeps_the_compiled_cpu_and_memory(vertex):
    assert run_main([*VERTEX_ARGS, "TRAIN_ACCELERATOR=NVIDIA_L4"]) == 0
    resources = train_resources(vertex.templates[0])
    assert resources == {**train_resources(COMPILED), "accelerator": {
        "count": "1", "resourceCount": "1", "resourceType": "NVIDIA_L4", "type": "NVIDIA_L4"}}


def test_no_train_settings_keep_the_compiled_train_step(vertex, kfp_api):
    assert run_main(VERTEX_ARGS) == 0
    assert run_main(kubeflow_args(kfp_api.host)) == 0
    assert train_resources(vertex.templates[0]) == train_resources(kfp_api.packages[0]) == train_resources(COMPILED)


def test_bad_train_settings_fail_before_any_client(vertex, capsys):
    assert run_main([*VERTEX_ARGS, "TRAIN_MEMORY=32", "TRAIN_ACCELERATOR=TPU_V3"]) == 2
    err = capsys.readouterr().err
    assert "TRAIN_MEMORY=32: give an amount with its unit" in err
    assert "TRAIN_ACCELERATOR=TPU_V3 is not a Vertex AI GPU type" in err
    vertex.auth_default.assert_not_called()
    vertex.job_cls.assert_not_called()
