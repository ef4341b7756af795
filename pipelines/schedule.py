"""`make schedule` / `make unschedule`: scheduled retraining on Vertex AI, Kubeflow Pipelines or cron.

    python -m pipelines.schedule create TARGET=vertex|kubeflow|local CRON="0 3 * * 1" [key=value ...]
    python -m pipelines.schedule delete TARGET=vertex|kubeflow|local [SCHEDULE_NAME=...]

CRON is standard 5-field cron (minute hour day-of-month month day-of-week), evaluated in UTC on
Vertex AI and in the scheduler's time zone on KFP. Scheduled runs never use the cache (new photos
under the same DATA must be read again) and never overlap (one run at a time). A schedule with the
same SCHEDULE_NAME is replaced: the new one is created first, then the old ones are deleted.
TARGET=local installs nothing: it prints the crontab line to add.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

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
    RemoteSettings,
    SubmitError,
    check_remote,
    init_vertex,
    kfp_client,
    kfp_name_filter,
    kfp_refusal,
    pipeline_package,
    remote_settings,
    vertex_job,
)

SCHEDULE_SETTINGS = {"CRON": "", "SCHEDULE_NAME": "catdog-retraining"}
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
    """KFP's scheduler (robfig/cron) takes 6 fields, seconds first: '0 3 * * 1' -> '0 0 3 * * 1'."""
    return "0 " + validate_cron(cron)


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
    with pipeline_package(s.image) as template:
        job = vertex_job(aiplatform, s, config, template, display_name=name,
                         labels={**s.labels, "trigger": "schedule"}, enable_caching=False)
    schedule = job.create_schedule(
        display_name=name, cron=validate_cron(cron), max_concurrent_run_count=1, max_run_count=None,
        service_account=s.service_account or None,
    )
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
    with pipeline_package(s.image) as package, kfp_refusal("the recurring run"):
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


# --- command line -------------------------------------------------------------------------------

def create(argv: list[str]) -> None:
    overrides, settings = parse_arguments(argv, KNOWN_SETTINGS)
    config = build_config(with_vertex_defaults(overrides, settings))
    target, name = settings["TARGET"], settings["SCHEDULE_NAME"]
    cron = validate_cron(settings["CRON"])
    if target == "local":
        check_local_inputs(absolute_local_paths(config))
        print("# add this line with `crontab -e` (nothing was installed):")
        print(crontab_line(cron, argv, name))
    elif target == "vertex":
        schedule_vertex(config, check_remote(target, config, settings), name, cron)
    elif target == "kubeflow":
        schedule_kubeflow(config, check_remote(target, config, settings), name, cron)
    else:
        raise ConfigError(f"unknown TARGET={target}; choose local, kubeflow or vertex")


def delete(argv: list[str]) -> None:
    _, settings = parse_arguments(argv, KNOWN_SETTINGS)
    target, name = settings["TARGET"], settings["SCHEDULE_NAME"]
    if target == "local":
        print(f"nothing was installed: remove the line ending in '# {name}' with `crontab -e`")
        return
    if target not in ("vertex", "kubeflow"):
        raise ConfigError(f"unknown TARGET={target}; choose local, kubeflow or vertex")
    s = remote_settings(target, settings, submitting=False)
    deleted = unschedule_vertex(s, name) if target == "vertex" else unschedule_kubeflow(s, name)
    print(f"deleted {deleted} schedule(s) named {name}" if deleted else f"no schedule named {name}")


def main(argv: list[str]) -> int:
    actions = {"create": create, "delete": delete}
    if not argv or argv[0] not in actions:
        print("usage: python -m pipelines.schedule create|delete TARGET=... [CRON=...] [key=value ...]",
              file=sys.stderr)
        return 2
    try:
        actions[argv[0]](argv[1:])
    except (ConfigError, SubmitError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
