"""The `make run` / `make schedule` word grammar: KEY=value words -> (pipeline overrides, runner settings).

Lower-case keys are pipeline parameters (pipelines/config.py); DATA, REGISTRY and WEIGHTS are
aliases of three of them (ALIASES); other upper-case keys are settings of the runner, each with its
default in RUNNER_SETTINGS (the local runners': TARGET, OUTPUT_ROOT, PROGRESS_FILE, VERBOSE and
pipelines/container_run.py's; the remote targets': pipelines/remote.py's) or, for `make schedule`,
also SCHEDULE_SETTINGS. An unknown setting is a ConfigError naming the closest known one.
Used by pipelines/run.py, pipelines/schedule.py and the feedback app's retraining configuration.
"""

from __future__ import annotations

from catdog import REPO_ROOT
from pipelines.config import ConfigError, did_you_mean
from pipelines.container_run import CONTAINER_SETTINGS
from pipelines.remote import REMOTE_SETTINGS

ALIASES = {"DATA": "data_uri", "REGISTRY": "registry_uri", "WEIGHTS": "weights"}
# local runs: PROGRESS_FILE: the run's progress events (default: beside the log); VERBOSE=1: the full
# log on the terminal. (The run's decision is read from the registry by its run id: no result file.)
RUNNER_SETTINGS = {"TARGET": "local", "OUTPUT_ROOT": str(REPO_ROOT / "local_outputs"),
                   "PROGRESS_FILE": "", "VERBOSE": "0", **CONTAINER_SETTINGS, **REMOTE_SETTINGS}
SCHEDULE_SETTINGS = {"CRON": "", "SCHEDULE_NAME": "catdog-retraining", "DRY_RUN": "0", "SPEC_FILE": ""}
PATH_PARAMETERS = ("data_uri", "feedback_uri", "registry_uri", "weights")


def parse_arguments(
    argv: list[str], known: dict[str, str] | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """Split key=value words into (pipeline overrides, runner settings); upper-case = setting.

    `known` maps the accepted settings to their defaults (RUNNER_SETTINGS unless given).
    """
    known = RUNNER_SETTINGS if known is None else known
    overrides, settings = {}, dict(known)
    for word in argv:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {word!r}")
        if key in ALIASES:
            overrides[ALIASES[key]] = value
        elif key.isupper():
            if key not in known:
                hint = did_you_mean([key], [*ALIASES, *known])
                raise ConfigError(f"unknown setting {key}{hint}; known: {', '.join([*ALIASES, *known])}")
            settings[key] = value
        else:
            overrides[key] = value
    return overrides, settings


def with_vertex_defaults(overrides: dict[str, str], settings: dict[str, str]) -> dict[str, str]:
    """On TARGET=vertex, deploy to the project and region the pipeline runs in unless told otherwise."""
    if settings.get("TARGET") != "vertex":
        return overrides
    defaults = {"vertex_project": settings.get("PROJECT", ""), "vertex_region": settings.get("REGION", "")}
    return {**{k: v for k, v in defaults.items() if v}, **overrides}
