"""make image-test: the whole compiled pipeline with every step in the component image.

Two runs of compiled/training_pipeline.yaml through `make run RUNNER=container`'s code
(pipelines/container_run.py: kfp.local's DockerRunner on podman's Docker API), the steps as the
image's uid 10001 (group 0), on 24 synthetic photos with a tiny model (32 px, no pretrained
weights, one frozen epoch):

- gs:// : data and registry on the GCS emulator (STORAGE_EMULATOR_HOST passed through): the first
  champion is promoted, so the conditional deploy runs (deploy_target local: the registry alias);
- local : the same photos and that registry copied to local folders, mounted at the same paths,
  champion_margin 0.99: the same model cannot beat itself by that, so the champion is kept and the
  deploy step does not run.

Each run: every task folder of the compiled DAG (deploy only when promoted), every declared output
artifact written, the decision, the registry. Returns the champion (a local copy and its gs://
URI), which the predictor and feedback parts serve: one trained model for all the checks.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from container_tests.common import USER_ID, Failure, check, say, timed
from container_tests.build import Podman
from pipelines.remote import PIPELINE_YAML
from pipelines.training_pipeline import STEPS

TINY = {"image_size": "32", "weights": "none", "frozen_epochs": "1", "finetune_epochs": "0", "batch_size": "8",
        "augmentations": "flip"}
PER_CLASS = 12
METADATA_ONLY = ("system.Metrics", "system.ClassificationMetrics")
TASKS = tuple(step for step in STEPS if step != "deploy")  # deploy runs only on a promotion


def declared_outputs() -> dict[str, set[str]]:
    """Task folder name -> the output artifacts its component declares in the compiled YAML."""
    import yaml

    spec = yaml.safe_load(PIPELINE_YAML.read_text())
    outputs = {}
    for name, component in spec["components"].items():
        if name.startswith("comp-") and "executorLabel" in component:
            declared = component.get("outputDefinitions", {}).get("artifacts", {})
            outputs[name.removeprefix("comp-")] = {  # metrics artifacts are metadata only: no file
                output for output, spec in declared.items()
                if spec["artifactType"]["schemaTitle"] not in METADATA_ONLY}
    return outputs


def world_writable(*folders: Path) -> None:
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777)  # the steps run as uid 10001 (group 0); these folders are root's


def quietly(run_pipeline, log: Path, *args, **kwargs) -> Path:
    """run_pipeline with kfp.local's output (the steps' logs, executor inputs) in `log`; its tail
    is printed when the run fails."""
    with open(log, "w") as handle:
        try:
            with contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
                return run_pipeline(*args, **kwargs)
        except BaseException:
            handle.flush()
            print(f"--- last lines of {log} ---\n{log.read_text()[-6000:]}", file=sys.stderr, flush=True)
            raise


def run_checks(label: str, run_dir: Path, promoted: bool) -> dict:
    present = {p.name for p in run_dir.iterdir() if p.is_dir()}
    expected = set(TASKS) | ({"deploy"} if promoted else set())
    check(f"{label}: the run's task folders are the compiled DAG's {'with' if promoted else 'without'} deploy",
          present == expected, f"{sorted(present)}")
    missing = [f"{task}.{output}" for task, outputs in declared_outputs().items() if task in present
               for output in outputs if not (run_dir / task / output).exists()]
    check(f"{label}: every output artifact the compiled YAML declares was written", not missing, str(missing))
    owner = {str((run_dir / task / "executor_output.json").stat().st_uid) for task in present
             if (run_dir / task / "executor_output.json").exists()}
    check(f"{label}: the steps ran as the image's uid 10001 (owner of what they wrote)", owner == {USER_ID},
          str(owner))
    decision_file = run_dir / "select-champion" / "decision_json"
    decision = json.loads(decision_file.read_text()) if decision_file.is_file() else {}
    check(f"{label}: decision {'promoted' if promoted else 'champion kept'}", decision.get("promoted") is promoted,
          json.dumps(decision)[:400])
    return decision


def run_pipelines(podman: Podman, image: str, work: Path, emulator: str) -> tuple[Path, str]:
    """The two runs; returns (local copy of the champion's version folder, its gs:// URI)."""
    from catdog import storage
    from pipelines.config import build_config
    from pipelines.container_run import run_pipeline
    from container_tests.component_run import synthetic_dataset

    settings = {"IMAGE": image, "IMAGE_CACHE": str(podman.root.parent), "IMAGE_STORAGE_DRIVER": podman.driver}
    user = f"{USER_ID}:0"
    data = synthetic_dataset(work / "data", per_class=PER_CLASS)
    bucket = "gs://catdog-image-test/pipeline"
    if os.environ.get("STORAGE_EMULATOR_HOST") != emulator:
        raise Failure("the GCS emulator is not in STORAGE_EMULATOR_HOST")
    storage.upload_tree(data, f"{bucket}/data")

    with timed("pipeline in containers: gs:// data and registry, promoted + deploy"):
        outputs = work / "outputs"
        world_writable(outputs)
        config = build_config({**TINY, "data_uri": f"{bucket}/data", "registry_uri": f"{bucket}/registry"})
        run_dir = quietly(run_pipeline, work / "gcs-run.log", config, settings, outputs, user=user)
        say(f"  every step in {image}; kfp.local's output: {work / 'gcs-run.log'}")
        decision = run_checks("gs://", run_dir, promoted=True)
        alias = (json.loads(storage.read_text(f"{bucket}/registry/champion.json"))
                 if storage.exists(f"{bucket}/registry/champion.json") else {})
        check("gs://: the registry on the emulator names the new champion",
              alias.get("version") == decision.get("challenger_version"), json.dumps(alias)[:300])

    with timed("pipeline in containers: local data and registry, champion kept"):
        registry_dir = work / "registry"
        storage.download_tree(f"{bucket}/registry", registry_dir)
        for path in [registry_dir, *registry_dir.rglob("*")]:
            path.chmod(0o777 if path.is_dir() else 0o666)
        outputs = work / "outputs-local"
        world_writable(outputs)
        config = build_config({**TINY, "data_uri": str(data), "registry_uri": str(registry_dir),
                               "champion_margin": "0.99"})
        run_dir = quietly(run_pipeline, work / "local-run.log", config, settings, outputs, user=user)
        kept = run_checks("local", run_dir, promoted=False)
        check("local: the champion stays the one the gs:// run promoted",
              kept.get("champion_version") == decision.get("challenger_version")
              and json.loads((registry_dir / "champion.json").read_text()).get("version")
              == decision.get("challenger_version"), json.dumps(kept)[:300])
    version = decision.get("challenger_version")
    if version is None:
        raise Failure("no champion to serve: the gs:// run promoted nothing")
    say(f"  the champion v{version} serves in the predictor and feedback checks")
    model = registry_dir / "versions" / str(version)
    for path in [model, *model.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return model, f"{bucket}/registry/versions/{version}"
