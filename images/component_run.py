"""make image-test: one pipeline component run inside its image the way KFP's launcher does."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from images.common import REPO, USER_ID, check, say, timed
from images.build import Podman



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


def run_component(podman: Podman, image: str, work: Path) -> None:
    with timed("component ingest in the component image"):
        data = synthetic_dataset(work / "data")
        pipeline_root = work / "pipeline_root"
        pipeline_root.mkdir()
        pipeline_root.chmod(0o777)  # the image's uid 10001 writes the outputs
        compiled_image, command, executor_input = launcher_command("ingest", {"data_uri": str(data)},
                                                                   str(pipeline_root))
        say(f"  compiled/training_pipeline.yaml: exec-ingest, image {compiled_image} (here {image}), "
            f"command {shlex.join(command[:2])} ... --executor_input <JSON> --function_to_execute ingest")
        name = "catdog-image-test-ingest"
        podman("rm", "-f", name, check=False)
        result = podman("run", "--name", name, "--network", "none", "-v", f"{data}:{data}:ro",
                        "-v", f"{pipeline_root}:{pipeline_root}", "--entrypoint", command[0], image, *command[1:],
                        check=False)
        podman("rm", "-f", name, check=False)
        log = result.stdout + result.stderr
        check("ingest: exit status 0", result.returncode == 0, f"{result.returncode}\n{log[-4000:]}")
        output_file = Path(executor_input["outputs"]["outputFile"])
        owner = str(output_file.stat().st_uid) if output_file.is_file() else "no executor output"
        check("ingest: ran as the image's user 10001 (owner of what it wrote)", owner == USER_ID, owner)
        check("ingest: its log says what it kept and skipped", "kept 16 images" in log and "skipped 2" in log,
              log[-1500:])
        outputs = executor_input["outputs"]
        written = json.loads(output_file.read_text()) if output_file.is_file() else {}
        dataset = (written.get("artifacts", {}).get("dataset", {}).get("artifacts") or [{}])[0]
        metadata = dataset.get("metadata", {})
        check("ingest: executor output with the dataset's metadata (16 images, 2 skipped)",
              metadata.get("n_images") == 16 and metadata.get("n_skipped") == 2
              and metadata.get("class_counts") == {"cat": 8, "dog": 8}, json.dumps(written)[:500])
        paths = {name: Path(a["artifacts"][0]["uri"]) for name, a in outputs["artifacts"].items()}
        report = paths["report"].read_text() if paths["report"].is_file() else ""
        check("ingest: report (Markdown) and report_json written", "notes.jpg" in report
              and json.loads(paths["report_json"].read_text()).get("n_images") == 16, report[:300])
        files = [p for p in paths["dataset"].rglob("*") if p.is_file()] if paths["dataset"].is_dir() else []
        check("ingest: the dataset artifact holds the kept photos", len(files) >= 16, f"{len(files)} files")
