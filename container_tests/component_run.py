"""One task of the compiled pipeline as KFP's launcher starts it (the command, its placeholders filled), and
the synthetic photos make image-test's pipeline runs use (container_tests/pipeline_run.py)."""

from __future__ import annotations

from pathlib import Path

from container_tests.common import REPO



# -- one component, the way KFP's launcher runs it ------------------------------------------------

def launcher_command(component: str, arguments: dict, pipeline_root: str,
                     pipeline_yaml: Path = REPO / "compiled" / "training_pipeline.yaml"):
    """(image, command, executor input) for one task of the compiled pipeline: the executor's
    container command + args with every placeholder filled as kfp.local does for its DockerRunner
    (outputs under <pipeline_root>/<run>/<task>/). `arguments`: the task's parameters; the rest
    come from the pipeline's defaults through the task's componentInputParameter."""
    import yaml
    from google.protobuf import json_format
    from kfp.local import executor_input_utils, placeholder_utils
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec = yaml.safe_load(pipeline_yaml.read_text())
    task = spec["root"]["dag"]["tasks"][component]
    component_name = task["componentRef"]["name"]
    component_spec = json_format.ParseDict(spec["components"][component_name], pipeline_spec_pb2.ComponentSpec())
    executor = spec["deploymentSpec"]["executors"][spec["components"][component_name]["executorLabel"]]
    root_parameters = spec["root"]["inputDefinitions"]["parameters"]
    kinds = {name: p["parameterType"] for name, p in spec["components"][component_name]["inputDefinitions"]
             .get("parameters", {}).items()}
    values = {}
    for name, source in task["inputs"].get("parameters", {}).items():
        if name in arguments:
            values[name] = arguments[name]
        elif "componentInputParameter" in source:
            values[name] = root_parameters[source["componentInputParameter"]].get("defaultValue")
        else:
            raise ValueError(f"{component}.{name}: not a pipeline parameter; pass it in arguments")
        if kinds.get(name) == "NUMBER_INTEGER":
            values[name] = int(values[name])
    unknown = set(arguments) - set(values)
    if unknown:
        raise ValueError(f"{component} has no parameters {sorted(unknown)}")

    run_name = executor_input_utils.get_local_pipeline_resource_name(spec["pipelineInfo"]["name"])
    task_name = executor_input_utils.get_local_task_resource_name(component_name)
    task_root = executor_input_utils.construct_local_task_root(pipeline_root, run_name, task_name)
    executor_input = executor_input_utils.construct_executor_input(component_spec, values, task_root,
                                                                   block_input_artifact=True)
    executor_input_dict = executor_input_utils.executor_input_to_dict(executor_input, component_spec)
    container_spec = executor["container"]
    command = placeholder_utils.replace_placeholders(
        full_command=[*container_spec["command"], *container_spec["args"]],
        executor_input_dict=executor_input_dict, pipeline_resource_name=run_name,
        task_resource_name=task_name, pipeline_root=pipeline_root,
        unique_pipeline_id=placeholder_utils.make_random_id(),
    )
    return container_spec["image"], command, executor_input_dict


def synthetic_dataset(root: Path, per_class: int = 8) -> Path:
    """cat/ and dog/ photos (tests.helpers) plus two files ingest must skip, world-readable."""
    from tests.helpers import make_class_folders, make_image

    make_class_folders(root, {"cat": per_class, "dog": per_class})
    (root / "cat" / "notes.jpg").write_text("not a photo")
    make_image(root / "dog" / "tiny.jpg", size=(8, 8), seed=99)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root
