"""`make schedule` / `make unschedule`: scheduled retraining on Vertex AI, Kubeflow Pipelines or cron.

    python -m pipelines.schedule create TARGET=vertex|kubeflow|local CRON="0 3 * * 1" [key=value ...]
    python -m pipelines.schedule delete TARGET=vertex|kubeflow|local [SCHEDULE_NAME=...]

CRON is standard 5-field cron (minute hour day-of-month month day-of-week), evaluated in UTC on
Vertex AI and in the scheduler's time zone on KFP. Scheduled runs never use the cache (new photos
under the same DATA must be read again) and never overlap (one run at a time). A schedule with the
same SCHEDULE_NAME is replaced: the new one is created first, then the old ones are deleted.
TARGET=local installs nothing: it prints the crontab line to add.

A schedule takes no `run_id` (ConfigError): each scheduled run records its decision under the
service's id of that run (pipelines/training_pipeline.py), each crontab `make run` makes its own.

DRY_RUN=1 (or SPEC_FILE=path) sends nothing: it writes the exact request body `create` would send,
as YAML (a KFP v2beta1 RecurringRun or a Vertex AI v1 Schedule), to stdout or SPEC_FILE.

    python -m pipelines.schedule examples    # regenerate manifests/schedules/*.yaml

The targets: pipelines/kubeflow.py, pipelines/vertex.py (schedule, unschedule, the dry run's body)
and pipelines/local.py (the crontab line); cron parsing: pipelines/cron.py. This module parses the
words, dispatches, and writes the dry run's YAML.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from google.api_core.exceptions import GoogleAPICallError
from kfp_server_api import ApiException

from catdog import REPO_ROOT
from pipelines.config import ConfigError, PipelineConfig, build_config
from pipelines.cron import validate_cron
from pipelines.kubeflow import KFP_EXPERIMENT_ID, kfp_recurring_run_body, schedule_kubeflow, unschedule_kubeflow
from pipelines.local import absolute_local_paths, check_local_inputs, crontab_line
from pipelines.remote import (
    REMOTE_TARGETS,
    RemoteSettings,
    SubmitError,
    check_remote,
    parse_flag,
    pipeline_package,
    remote_settings,
)
from pipelines.vertex import schedule_vertex, unschedule_vertex, vertex_schedule_body
from pipelines.words import RUNNER_SETTINGS, SCHEDULE_SETTINGS, parse_arguments, with_vertex_defaults

KNOWN_SETTINGS = {**RUNNER_SETTINGS, **SCHEDULE_SETTINGS}
SPECS_DIR = REPO_ROOT / "manifests" / "schedules"
EXAMPLE_CRON = "0 3 * * 1"  # Mondays 03:00 (UTC on Vertex)
_EXAMPLE_DATA = ["DATA=gs://my-bucket/photos", "REGISTRY=gs://my-bucket/registry"]
_EXAMPLE_IMAGE = "IMAGE=us-central1-docker.pkg.dev/my-project/catdog/catdog-components:TAG"
EXAMPLES = {  # file -> `make schedule` arguments, with placeholder project, bucket and image
    "kfp-recurring-run.yaml": ["TARGET=kubeflow", "KFP_HOST=http://localhost:8080", _EXAMPLE_IMAGE,
                               "SERVICE_ACCOUNT=pipeline-runner", *_EXAMPLE_DATA],
    "vertex-schedule.yaml": ["TARGET=vertex", "PROJECT=my-project", "REGION=us-central1", _EXAMPLE_IMAGE,
                             "PIPELINE_ROOT=gs://my-bucket/pipeline-root",
                             "SERVICE_ACCOUNT=catdog-pipelines@my-project.iam.gserviceaccount.com", *_EXAMPLE_DATA],
}
_LAST = ("pipeline_spec", "pipelineSpec", "pipelineJob", "createPipelineJobRequest")  # the big part last


def _ordered(value: Any) -> Any:
    """Keys sorted (protobuf map order is not stable), the pipeline spec after the small fields."""
    if isinstance(value, dict):
        return {k: _ordered(value[k]) for k in sorted(value, key=lambda k: (k in _LAST, k))}
    return [_ordered(v) for v in value] if isinstance(value, list) else value


def schedule_spec(target: str, config: PipelineConfig, s: RemoteSettings, name: str, cron: str) -> str:
    """The body `create` would send to `target`, as commented YAML; sends nothing."""
    with pipeline_package(s.image, s.train_hardware) as package:
        if target == "kubeflow":
            body = kfp_recurring_run_body(config, s, name, cron, package)
            how = (f"KFP v2beta1 RecurringRun. Set experiment_id ({KFP_EXPERIMENT_ID}: the id of experiment "
                   f"{s.experiment}), then POST it as JSON to {s.kfp_host}/apis/v2beta1/recurringruns")
        else:
            body = vertex_schedule_body(config, s, name, cron, package)
            how = (f"Vertex AI v1 Schedule. POST it as JSON to https://{s.region}-aiplatform.googleapis.com/v1/"
                   f"projects/{s.project}/locations/{s.region}/schedules")
    return (f"# {how}.\n# Written by `make schedule ... DRY_RUN=1` (nothing was sent); see "
            f"manifests/schedules/README.md.\n" + yaml.safe_dump(_ordered(body), sort_keys=False, width=100))


def write_examples(folder: Path = SPECS_DIR) -> None:
    """Write manifests/schedules/*.yaml: `make schedule ... SPEC_FILE=...` for each of EXAMPLES."""
    folder.mkdir(parents=True, exist_ok=True)
    for filename, argv in EXAMPLES.items():
        create([*argv, f"CRON={EXAMPLE_CRON}", f"SPEC_FILE={folder / filename}"])


# --- command line -------------------------------------------------------------------------------

def create(argv: list[str]) -> None:
    overrides, settings = parse_arguments(argv, KNOWN_SETTINGS)
    config = build_config(with_vertex_defaults(overrides, settings))
    if config.run_id:
        raise ConfigError(f"run_id={config.run_id}: every scheduled run gets an id of its own (the service's "
                          "run id; `make run` makes one in a crontab line), so a schedule takes none")
    target, name = settings["TARGET"], settings["SCHEDULE_NAME"]
    cron = validate_cron(settings["CRON"])
    dry_run = parse_flag("DRY_RUN", settings["DRY_RUN"]) or bool(settings["SPEC_FILE"])
    if target == "local":
        # the cron line's runs check WEIGHTS=imagenet when they start (this machine may be offline now)
        check_local_inputs(absolute_local_paths(config), weights_download=False)
        print("# add this line with `crontab -e` (nothing was installed):")
        print(crontab_line(cron, argv, name))
    elif target in REMOTE_TARGETS and dry_run:
        spec = schedule_spec(target, config, check_remote(target, config, settings), name, cron)
        if settings["SPEC_FILE"]:
            Path(settings["SPEC_FILE"]).write_text(spec)
            print(f"wrote {settings['SPEC_FILE']} (nothing was sent)")
        else:
            print(spec, end="")
    elif target == "vertex":
        schedule_vertex(config, check_remote(target, config, settings), name, cron)
    elif target == "kubeflow":
        schedule_kubeflow(config, check_remote(target, config, settings), name, cron)
    else:
        raise ConfigError(f"unknown TARGET={target}; choose local, kubeflow or vertex")


def delete(argv: list[str]) -> None:
    _, settings = parse_arguments(argv, KNOWN_SETTINGS)
    target, name = settings["TARGET"], settings["SCHEDULE_NAME"]
    if parse_flag("DRY_RUN", settings["DRY_RUN"]) or settings["SPEC_FILE"]:
        raise ConfigError("DRY_RUN and SPEC_FILE apply to `make schedule` only; unschedule has no dry run")
    if target == "local":
        print(f"nothing was installed: remove the line ending in '# {name}' with `crontab -e`")
        return
    if target not in ("vertex", "kubeflow"):
        raise ConfigError(f"unknown TARGET={target}; choose local, kubeflow or vertex")
    s = remote_settings(target, settings, submitting=False)
    deleted = unschedule_vertex(s, name) if target == "vertex" else unschedule_kubeflow(s, name)
    print(f"deleted {deleted} schedule(s) named {name}" if deleted else f"no schedule named {name}")



def main(argv: list[str]) -> int:
    actions = {"create": create, "delete": delete, "examples": lambda _: write_examples()}
    if not argv or argv[0] not in actions:
        print("usage: python -m pipelines.schedule create|delete TARGET=... [CRON=...] [DRY_RUN=1] [key=value ...]"
              "\n       python -m pipelines.schedule examples", file=sys.stderr)
        return 2
    try:
        actions[argv[0]](argv[1:])
    except (ConfigError, SubmitError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (GoogleAPICallError, ApiException) as exc:  # permission denied, API not enabled, bad request
        print(f"error: the scheduling API refused the request: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
