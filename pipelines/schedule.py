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
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml
from google.api_core.exceptions import GoogleAPICallError
from kfp_server_api import ApiException

from pipelines.config import ConfigError, PipelineConfig, build_config
from pipelines.run import (
    ALIASES,
    PATH_PARAMETERS,
    REPO_ROOT,
    RUNNER_SETTINGS,
    absolute_local_paths,
    check_local_inputs,
    parse_arguments,
    with_vertex_defaults,
)
from pipelines.submit import (
    REMOTE_TARGETS,
    RemoteSettings,
    SubmitError,
    check_remote,
    init_vertex,
    kfp_client,
    kfp_name_filter,
    kfp_refusal,
    parse_flag,
    pipeline_package,
    remote_settings,
    vertex_job,
)

SCHEDULE_SETTINGS = {"CRON": "", "SCHEDULE_NAME": "catdog-retraining", "DRY_RUN": "0", "SPEC_FILE": ""}
KNOWN_SETTINGS = {**RUNNER_SETTINGS, **SCHEDULE_SETTINGS}
_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
# (name, lowest, highest, names for lowest.., in order)
CRON_FIELDS = (
    ("minute", 0, 59, []), ("hour", 0, 23, []), ("day-of-month", 1, 31, []),
    ("month", 1, 12, _MONTHS), ("day-of-week", 0, 7, _DAYS),
)
CRON_HELP = 'a 5-field cron "minute hour day-of-month month day-of-week", e.g. CRON="0 3 * * 1" (Mondays 03:00)'


def _cron_value(text: str, low: int, high: int, names: list[str]) -> bool:
    if text.upper() in names:
        return True
    return text.isdigit() and low <= int(text) <= high


def _cron_field_ok(field: str, low: int, high: int, names: list[str]) -> bool:
    for part in field.split(","):
        base, slash, step = part.partition("/")
        if slash and not (step.isdigit() and int(step) > 0):
            return False
        if base == "*":
            continue
        first, dash, last = base.partition("-")
        if not all(_cron_value(v, low, high, names) for v in ([first, last] if dash else [first])):
            return False
        if dash and first.isdigit() and last.isdigit() and int(first) > int(last):
            return False  # a reversed range
    return True


def validate_cron(cron: str) -> str:
    """The user's 5-field cron, whitespace-normalised, or a ConfigError naming the bad field."""
    fields = cron.split()
    if not cron.strip():
        raise ConfigError(f"CRON is not set: give {CRON_HELP}")
    if len(fields) != 5:
        raise ConfigError(f"CRON={cron!r} has {len(fields)} fields; give {CRON_HELP}")
    for field, (name, low, high, names) in zip(fields, CRON_FIELDS):
        if not _cron_field_ok(field, low, high, names):
            raise ConfigError(f"CRON={cron!r}: bad {name} field {field!r} ({low}-{high}); give {CRON_HELP}")
    return " ".join(fields)


def kfp_cron(cron: str) -> str:
    """KFP's scheduler (robfig/cron) takes 6 fields, seconds first: '0 3 * * 1' -> '0 0 3 * * 1';
    its day-of-week is 0-6, so Sunday-as-7 becomes 0."""
    fields = validate_cron(cron).split()
    fields[4] = ",".join("0" if part == "7" else part for part in fields[4].split(","))
    return "0 " + " ".join(fields)


# --- local: a crontab line ----------------------------------------------------------------------

def crontab_line(cron: str, argv: list[str], name: str, repo: Path = REPO_ROOT) -> str:
    """The crontab line that runs `make run <argv>` in the repository on `cron` (local paths made absolute)."""
    path_keys = {*PATH_PARAMETERS, *[k for k, v in ALIASES.items() if v in PATH_PARAMETERS], "OUTPUT_ROOT"}
    words = []
    for word in argv:
        key, _, value = word.partition("=")
        if key in SCHEDULE_SETTINGS or key == "TARGET":
            continue
        if key in path_keys and "://" not in value and value.lower() not in ("imagenet", "none"):
            value = str(Path(value).expanduser().resolve())
        words.append(shlex.quote(f"{key}={value}"))
    command = " ".join(["make run", *words]).rstrip()
    line = (f"{validate_cron(cron)} cd {shlex.quote(str(repo))} && mkdir -p local_outputs && "
            f"{command} >> local_outputs/retraining.log 2>&1 # {name}")
    return line.replace("%", "\\%")  # cron turns a bare % into a newline


# --- Vertex AI ----------------------------------------------------------------------------------

def schedule_vertex(config: PipelineConfig, s: RemoteSettings, name: str, cron: str):
    """Create the Vertex AI schedule `name` (replacing any of that name); returns it."""
    aiplatform = init_vertex(s)
    old = aiplatform.PipelineJobSchedule.list(
        filter=f'display_name="{name}"', project=s.project, location=s.region
    )
    with pipeline_package(s.image, s.train_hardware) as template:
        job = vertex_job(aiplatform, s, config, template, display_name=name,
                         labels={**s.labels, "trigger": "schedule"}, enable_caching=False)
    schedule = job.create_schedule(
        display_name=name, cron=validate_cron(cron), max_concurrent_run_count=1, max_run_count=None,
        service_account=s.service_account or None,
    )
    with replaced_warning(schedule.resource_name):
        for previous in old:
            previous.delete()
    print(f"schedule {name} ({cron}, UTC) created in {s.project}/{s.region}"
          f"{f', replacing {len(old)}' if old else ''}: https://console.cloud.google.com/vertex-ai/"
          f"locations/{s.region}/pipelines/schedules?project={s.project}")
    return schedule


def unschedule_vertex(s: RemoteSettings, name: str) -> int:
    aiplatform = init_vertex(s)
    old = aiplatform.PipelineJobSchedule.list(
        filter=f'display_name="{name}"', project=s.project, location=s.region
    )
    for schedule in old:
        schedule.delete()
    return len(old)


# --- Kubeflow Pipelines -------------------------------------------------------------------------

def kfp_recurring_runs_named(client, name: str, namespace: str | None) -> list:
    found, token = [], ""
    while True:
        page = client.list_recurring_runs(page_token=token, page_size=100, namespace=namespace,
                                          filter=kfp_name_filter(name))
        found += [r for r in (page.recurring_runs or []) if r.display_name == name]
        token = page.next_page_token
        if not token:
            return found


def schedule_kubeflow(config: PipelineConfig, s: RemoteSettings, name: str, cron: str):
    """Create the KFP recurring run `name` (replacing any of that name); returns it."""
    client = kfp_client(s)
    namespace = s.kfp_namespace or None
    with kfp_refusal(f"the experiment {s.experiment}"):
        experiment = client.create_experiment(name=s.experiment, namespace=namespace)
        old = kfp_recurring_runs_named(client, name, namespace)
    with pipeline_package(s.image, s.train_hardware) as package, kfp_refusal("the recurring run"):
        recurring = client.create_recurring_run(
            experiment_id=experiment.experiment_id,
            job_name=name,
            cron_expression=kfp_cron(cron),
            max_concurrency=1,
            no_catchup=True,
            params=config.pipeline_arguments(),
            pipeline_package_path=str(package),
            pipeline_root=s.pipeline_root or None,
            enable_caching=False,
            service_account=s.service_account or None,
        )
    with replaced_warning(recurring.recurring_run_id):
        for previous in old:
            client.delete_recurring_run(previous.recurring_run_id)
    print(f"recurring run {name} ({kfp_cron(cron)}) created on {s.kfp_host}"
          f"{f', replacing {len(old)}' if old else ''}: "
          f"{s.kfp_host}/#/recurringruns/details/{recurring.recurring_run_id}")
    return recurring


def unschedule_kubeflow(s: RemoteSettings, name: str) -> int:
    client = kfp_client(s)
    old = kfp_recurring_runs_named(client, name, s.kfp_namespace or None)
    for recurring in old:
        client.delete_recurring_run(recurring.recurring_run_id)
    return len(old)


# --- dry run: the request bodies, validated against the SDKs' own models -------------------------

KFP_EXPERIMENT_ID = "EXPERIMENT_ID"  # placeholder: `create` looks the experiment up by name
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


def check_kfp_body(body: dict[str, Any]) -> dict[str, Any]:
    """`body` read as a kfp_server_api V2beta1RecurringRun and written back; ValueError names a field
    the model lacks or a value of the wrong type (either would not survive the round trip)."""
    from kfp_server_api import ApiClient, RecurringRunMode

    api = ApiClient()
    again = api.sanitize_for_serialization(
        api.deserialize(SimpleNamespace(data=json.dumps(body)), "V2beta1RecurringRun"))
    bad = sorted(k for k in body if again.get(k) != body[k])
    if body.get("mode") not in (None, *RecurringRunMode.allowable_values):
        bad.append("mode")
    if bad:
        raise ValueError(f"not a valid V2beta1RecurringRun: bad or unknown field(s) {', '.join(bad)}")
    return again


def check_vertex_body(body: dict[str, Any]) -> dict[str, Any]:
    """`body` parsed into google.cloud.aiplatform_v1 Schedule (unknown field or wrong type:
    json_format.ParseError), returned as canonical proto3 JSON (camelCase, int64 as strings)."""
    from google.cloud.aiplatform_v1.types import Schedule
    from google.protobuf import json_format

    message = json_format.ParseDict(body, Schedule.pb(Schedule()))
    return json_format.MessageToDict(message)


def kfp_pipeline_spec(package: Path, enable_caching: bool = False) -> dict[str, Any]:
    """The pipeline_spec kfp.Client.create_recurring_run sends for `package`: each root-DAG task's
    caching_options.enable_cache set to `enable_caching` (kfp 2.17 `_override_caching_options`)."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    first, *rest = yaml.safe_load_all(package.read_text())
    spec = json_format.ParseDict(first, pipeline_spec_pb2.PipelineSpec())
    for task in spec.root.dag.tasks.values():
        task.caching_options.enable_cache = enable_caching
    platform = json_format.ParseDict({k: v for doc in rest for k, v in doc.items()}, pipeline_spec_pb2.PlatformSpec())
    if platform == pipeline_spec_pb2.PlatformSpec():
        return json_format.MessageToDict(spec)
    return {"pipeline_spec": json_format.MessageToDict(spec), "platform_spec": json_format.MessageToDict(platform)}


def kfp_recurring_run_body(config: PipelineConfig, s: RemoteSettings, name: str, cron: str, package: Path,
                           experiment_id: str = KFP_EXPERIMENT_ID) -> dict[str, Any]:
    """The POST /apis/v2beta1/recurringruns body of `schedule_kubeflow` (caching off, one run at a time)."""
    runtime = {"pipeline_root": s.pipeline_root or None, "parameters": config.pipeline_arguments()}
    body = {
        "display_name": name, "pipeline_spec": kfp_pipeline_spec(package),
        "runtime_config": {k: v for k, v in runtime.items() if v is not None},
        "service_account": s.service_account or None, "max_concurrency": "1",
        "trigger": {"cron_schedule": {"cron": kfp_cron(cron)}}, "mode": "ENABLE", "no_catchup": True,
        "experiment_id": experiment_id,
    }
    return check_kfp_body({k: v for k, v in body.items() if v is not None})


def vertex_pipeline_spec(template: Path, enable_caching: bool = False) -> dict[str, Any]:
    """The compiled spec with every task of every DAG given cachingOptions {enableCache: ...}, as
    aiplatform.PipelineJob(enable_caching=...) does (`_set_enable_caching_value`)."""
    spec = yaml.safe_load(template.read_text())
    for component in [spec["root"], *spec.get("components", {}).values()]:
        for task in component.get("dag", {}).get("tasks", {}).values():
            task["cachingOptions"] = {"enableCache": enable_caching}
    return spec


def vertex_schedule_body(config: PipelineConfig, s: RemoteSettings, name: str, cron: str,
                         template: Path) -> dict[str, Any]:
    """The Schedule `schedule_vertex` creates (POST .../v1/projects/P/locations/R/schedules)."""
    job = {
        "runtime_config": {"gcs_output_directory": s.pipeline_root, "parameter_values": {
            k: v for k, v in config.pipeline_arguments().items() if v is not None}},
        "pipeline_spec": vertex_pipeline_spec(template),
        "labels": {**s.labels, "trigger": "schedule"},
    }
    if s.service_account:
        job["service_account"] = s.service_account
    return check_vertex_body({
        "display_name": name, "cron": validate_cron(cron), "max_concurrent_run_count": 1,
        "create_pipeline_job_request": {"parent": f"projects/{s.project}/locations/{s.region}", "pipeline_job": job},
    })


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


@contextlib.contextmanager
def replaced_warning(new_id: str) -> Iterator[None]:
    """Deleting the schedules the new one replaces failed: say that both now run, then re-raise."""
    try:
        yield
    except Exception:
        print(f"error: the new schedule {new_id} was created, but deleting the one(s) it replaces "
              f"failed: both run until you delete the old one (make unschedule deletes all of that name)",
              file=sys.stderr)
        raise


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
