"""`make run`: build the typed config from key=value overrides and run the pipeline on a target.

    python -m pipelines.run [TARGET=local|kubeflow|vertex] [DATA=...] [key=value ...]

Lower-case keys are pipeline parameters (pipelines/config.py); upper-case keys are settings of
the runner (the grammar: pipelines/words.py). Anything unknown or invalid fails here, before
anything runs, with one `error: ...` line that says what to pass (exit code 2); so does every input
of a local run that can be checked up front (DATA exists and has files, WEIGHTS is a file or, for
imagenet, is in the Keras cache or can be downloaded, the DATA archive downloads).

Every run has an id (the `run_id` parameter; '' = a uuid4 hex made here, printed first as `run id: ...`),
which select-champion records with its decision in the registry's history: when the run ended, its
decision is read from there by that id (catdog/registry.py decision_of_run), for local runs and for
remote ones with WAIT=1 alike. A run that finished without recording one says so.

The targets: pipelines/local.py (TARGET=local: the up-front checks of local inputs, the run and its
terminal), pipelines/kubeflow.py and pipelines/vertex.py (the remote submissions, their settings in
pipelines/remote.py). This module only parses the words and dispatches.
"""

from __future__ import annotations

import sys
import uuid

from catdog.progress import ProgressWriter
from pipelines.config import ConfigError, PipelineConfig, build_config
from pipelines.container_run import RUNNERS
from pipelines.kubeflow import submit_kubeflow
from pipelines.local import fail, main_local
from pipelines.remote import REMOTE_TARGETS, RemoteRunFailed, SubmitError, check_remote, print_decision
from pipelines.vertex import submit_vertex
from pipelines.words import parse_arguments, with_vertex_defaults


def with_run_id(config: PipelineConfig) -> PipelineConfig:
    """The config with its run id: the one given, else a new uuid4 hex (module docstring)."""
    return config if config.run_id else config.model_copy(update={"run_id": uuid.uuid4().hex})


def submit(target: str, config: PipelineConfig, settings: dict[str, str]) -> str:
    """Check everything local first (settings, paths, image), then submit to `target`."""
    s = check_remote(target, config, settings)
    url = submit_vertex(config, s) if target == "vertex" else submit_kubeflow(config, s)
    if s.wait:
        print_decision(config)
    return url


def main(argv: list[str]) -> int:
    try:
        overrides, settings = parse_arguments(argv)
    except ConfigError as exc:
        return fail(str(exc), 2)
    progress = ProgressWriter(settings["PROGRESS_FILE"] or None)
    try:
        config = build_config(with_vertex_defaults(overrides, settings))
    except ConfigError as exc:
        return fail(str(exc), 2, progress)
    config = with_run_id(config)
    target = settings["TARGET"]
    if settings["RUNNER"] not in RUNNERS or (settings["RUNNER"] == "container" and target != "local"):
        return fail(f"RUNNER={settings['RUNNER']}: choose {' or '.join(RUNNERS)} (TARGET=local)", 2, progress)
    if target == "local":
        print(f"run id: {config.run_id}", flush=True)
        return main_local(config, settings)
    if target in REMOTE_TARGETS:
        try:
            submit(target, config, settings)
        except SubmitError as exc:
            return fail(str(exc), 2)
        except RemoteRunFailed as exc:
            return fail(str(exc), 1)
        return 0
    return fail(f"unknown TARGET={target}; choose local, kubeflow or vertex", 2)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
