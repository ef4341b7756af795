"""The train step's hardware on a remote target: TRAIN_CPU, TRAIN_MEMORY, TRAIN_ACCELERATOR(_COUNT).

`make compile` fixes the train step at 4 CPUs and 8G (pipelines/training_pipeline.py); a
submission with TRAIN_* settings rewrites that executor's `container.resources` in its temporary
copy of the compiled YAML, in the shape KFP 2.17's `set_cpu_limit`, `set_memory_limit`,
`set_accelerator_type` and `set_accelerator_limit` compile to. Vertex AI picks the machine from
those limits; on Kubeflow they become the pod's resource limits, the accelerator type being the
Kubernetes resource name (nvidia.com/gpu).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

TRAIN_TASK = "train"  # the root DAG task the TRAIN_* settings size
HARDWARE_SETTINGS = {"TRAIN_CPU": "", "TRAIN_MEMORY": "", "TRAIN_ACCELERATOR": "", "TRAIN_ACCELERATOR_COUNT": ""}
_CPU = re.compile(r"(\d+(\.\d+)?|\d+m)")
_MEMORY = re.compile(r"(?P<number>\d+)(?P<unit>Ki|Mi|Gi|Ti|K|M|G|T)")
_BYTES = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_GB = 10**9
_K8S_RESOURCE = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


@dataclass(frozen=True)
class TrainHardware:
    """Limits for the train step's container; '' and 0 keep what `make compile` wrote."""

    cpu: str = ""  # "8", "0.5" or "500m"
    memory: str = ""  # "32G", "16Gi", "512M"
    accelerator: str = ""  # Vertex: an AcceleratorType such as NVIDIA_TESLA_T4; Kubeflow: nvidia.com/gpu
    accelerator_count: int = 0

    def resources(self, compiled: dict) -> dict:
        """The executor's `compiled` container.resources with these limits set as KFP 2.17 writes them."""
        resources = dict(compiled)
        if self.cpu:
            millis = self.cpu.endswith("m")
            resources["cpuLimit"] = float(self.cpu[:-1]) / 1000 if millis else float(self.cpu)
            resources["resourceCpuLimit"] = self.cpu
        if self.memory:
            match = _MEMORY.fullmatch(self.memory)
            number, unit = float(match["number"]), match["unit"]
            resources["memoryLimit"] = number if unit == "G" else number * _BYTES[unit] / _GB
            resources["resourceMemoryLimit"] = self.memory
        if self.accelerator:
            count = str(self.accelerator_count)
            resources["accelerator"] = {"count": count, "resourceCount": count,
                                        "resourceType": self.accelerator, "type": self.accelerator}
        return resources


AS_COMPILED = TrainHardware()


def vertex_gpu_types() -> list[str]:
    """The GPU names Vertex AI accepts (google.cloud.aiplatform_v1 AcceleratorType, TPUs left out:
    they need a TPUStrategy, which catdog/train.py does not use)."""
    from google.cloud.aiplatform_v1.types import AcceleratorType

    return [t.name for t in AcceleratorType if t.name.startswith("NVIDIA_")]


def _accelerator_problem(target: str, accelerator: str) -> str | None:
    if target == "vertex" and accelerator not in vertex_gpu_types():
        return (f"TRAIN_ACCELERATOR={accelerator} is not a Vertex AI GPU type; choose one of "
                f"{', '.join(vertex_gpu_types())}")
    if target == "kubeflow" and not _K8S_RESOURCE.fullmatch(accelerator):
        return (f"TRAIN_ACCELERATOR={accelerator}: on Kubeflow give the Kubernetes resource name of the "
                "device, e.g. nvidia.com/gpu or amd.com/gpu (names like NVIDIA_TESLA_T4 are for TARGET=vertex)")
    return None


def parse_train_hardware(target: str, settings: dict[str, str]) -> tuple[TrainHardware, list[str]]:
    """The TRAIN_* settings of `target` ('' = as compiled) and every problem found in them."""
    cpu, memory = settings.get("TRAIN_CPU", ""), settings.get("TRAIN_MEMORY", "")
    accelerator, count = settings.get("TRAIN_ACCELERATOR", ""), settings.get("TRAIN_ACCELERATOR_COUNT", "")
    problems = []
    if cpu and not (_CPU.fullmatch(cpu) and float(cpu.removesuffix("m")) > 0):
        problems.append(f"TRAIN_CPU={cpu}: give a number of CPUs, e.g. TRAIN_CPU=8, 0.5 or 500m (millicores)")
    memory_match = _MEMORY.fullmatch(memory)
    if memory and not (memory_match and int(memory_match["number"]) > 0):
        problems.append(f"TRAIN_MEMORY={memory}: give an amount with its unit, e.g. TRAIN_MEMORY=32G or 16Gi "
                        "(K, M, G, T or Ki, Mi, Gi, Ti; a bare number would be bytes)")
    if count and not (count.isdigit() and int(count) >= 1):
        problems.append(f"TRAIN_ACCELERATOR_COUNT={count}: give a whole number of accelerators, 1 or more")
    elif count and not accelerator:
        problems.append("TRAIN_ACCELERATOR_COUNT is set without TRAIN_ACCELERATOR: name the accelerator type too")
    if accelerator and (problem := _accelerator_problem(target, accelerator)):
        problems.append(problem)
    if problems:
        return AS_COMPILED, problems
    return TrainHardware(cpu, memory, accelerator, int(count or 1) if accelerator else 0), []

def size_train_step(package: Path, hardware: TrainHardware) -> None:
    """Set the train executor's container.resources in the compiled pipeline file `package`, in
    place; ValueError when it has no train task with a container (compiled from other code)."""
    documents = list(yaml.safe_load_all(package.read_text()))
    spec = documents[0]
    try:
        component = spec["root"]["dag"]["tasks"][TRAIN_TASK]["componentRef"]["name"]
        executor = spec["components"][component]["executorLabel"]
        container = spec["deploymentSpec"]["executors"][executor]["container"]
    except KeyError:
        raise ValueError(f"no {TRAIN_TASK!r} task with a container: run make compile") from None
    container["resources"] = hardware.resources(container.get("resources", {}))
    package.write_text(yaml.safe_dump_all(documents, sort_keys=False))
