"""`make run`: build the typed config from key=value overrides and run the pipeline on a target.

    python -m pipelines.run [TARGET=local|kubeflow|vertex] [DATA=...] [key=value ...]

Lower-case keys are pipeline parameters (pipelines/config.py); upper-case keys are settings of
the runner (remote ones: pipelines/submit.py). Anything unknown or invalid fails here, before
anything runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from catdog.sources import IngestError, default_cache_dir, download_once, download_path, is_archive
from pipelines.config import ConfigError, PipelineConfig, build_config
from pipelines.submit import (
    REMOTE_SETTINGS,
    REMOTE_TARGETS,
    RemoteRunFailed,
    SubmitError,
    submit,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
ALIASES = {"DATA": "data_uri", "REGISTRY": "registry_uri", "WEIGHTS": "weights"}
# RESULT_FILE (local runs): where to write {"run_dir", "decision"} as JSON once the run succeeded
RUNNER_SETTINGS = {"TARGET": "local", "OUTPUT_ROOT": str(REPO_ROOT / "local_outputs"), "RESULT_FILE": "",
                   **REMOTE_SETTINGS}
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
                raise ConfigError(f"unknown setting {key}; known: {', '.join([*ALIASES, *known])}")
            settings[key] = value
        else:
            overrides[key] = value
    return overrides, settings


def absolute_local_paths(config: PipelineConfig) -> PipelineConfig:
    """Local steps run in other working directories: make relative local paths absolute ('' = unset)."""
    updates = {}
    for key in PATH_PARAMETERS:
        value = getattr(config, key)
        if value and "://" not in value and value.lower() not in ("imagenet", "none"):
            updates[key] = str(Path(value).expanduser().resolve())
    return config.model_copy(update=updates)


def check_local_inputs(config: PipelineConfig) -> None:
    """TARGET=local: a local DATA or WEIGHTS path that does not exist fails now, not steps later.

    A feedback_uri that does not exist (yet) is fine: ingest reports that there is no feedback photo.
    """
    if "://" not in config.data_uri and not Path(config.data_uri).exists():
        raise ConfigError(
            f"DATA={config.data_uri} does not exist: give a folder with one sub-folder per class, "
            "a .zip/.tar.gz archive, an http(s) archive URL or a gs:// prefix"
        )
    weights = config.weights
    if "://" not in weights and weights.lower() not in ("imagenet", "none") and not Path(weights).is_file():
        raise ConfigError(f"WEIGHTS={weights} is not a file: give a .h5 path, a gs:// URI, imagenet or none")


def fetch_data_archive(config: PipelineConfig) -> None:
    """TARGET=local with an http(s) or gs:// archive (the default DATA is one): download it into the
    cache now, once, so the ingest step reads it from there and a failed download (offline) is one
    clear error naming what to pass instead. Raises IngestError."""
    uri = config.data_uri
    if "://" not in uri or not is_archive(uri):
        return
    cache_dir = default_cache_dir()
    if not download_path(uri, cache_dir).exists():
        print(f"downloading {uri} into {cache_dir} (once: later runs read the cache)", flush=True)
    download_once(uri, cache_dir)


def run_local(config: PipelineConfig, output_root: Path) -> Path:
    """Run the whole pipeline with kfp.local's SubprocessRunner; return the run's output folder."""
    from kfp import local

    from pipelines.training_pipeline import training_pipeline

    output_root.mkdir(parents=True, exist_ok=True)
    before = set(output_root.iterdir())
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(output_root))
    training_pipeline(**config.pipeline_arguments())
    new = sorted(set(output_root.iterdir()) - before, key=lambda p: p.stat().st_mtime)
    if not new:
        raise RuntimeError(f"the local run wrote nothing under {output_root}")
    return new[-1]


def read_decision(run_dir: Path) -> dict | None:
    """The champion decision of a finished local run (None when select-champion did not run)."""
    decision_file = run_dir / "select-champion" / "decision_json"
    return json.loads(decision_file.read_text()) if decision_file.is_file() else None


def write_result(path: Path, run_dir: Path) -> None:
    """RESULT_FILE: the run's folder and decision, written whole or not at all (a reader polls it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(json.dumps({"run_dir": str(run_dir), "decision": read_decision(run_dir)}, indent=1))
    staging.replace(path)


def describe_outputs(run_dir: Path) -> str:
    """One line per task output (where it landed), then the champion decision."""
    lines = [f"run outputs: {run_dir}"]
    for task_dir in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        for output in sorted(task_dir.iterdir()):
            if output.name != "executor_output.json":
                lines.append(f"  {task_dir.name}.{output.name}: {output}")
    decision = read_decision(run_dir)
    if decision is not None:
        verdict = "PROMOTED" if decision["promoted"] else "not promoted"
        lines.append(f"challenger v{decision['challenger_version']} {verdict}: {decision['reason']}")
        lines.append(f"champion: v{decision['champion_version']} in {decision['registry_uri']}")
    return "\n".join(lines)


def with_vertex_defaults(overrides: dict[str, str], settings: dict[str, str]) -> dict[str, str]:
    """On TARGET=vertex, deploy to the project and region the pipeline runs in unless told otherwise."""
    if settings.get("TARGET") != "vertex":
        return overrides
    defaults = {"vertex_project": settings.get("PROJECT", ""), "vertex_region": settings.get("REGION", "")}
    return {**{k: v for k, v in defaults.items() if v}, **overrides}


def main(argv: list[str]) -> int:
    try:
        overrides, settings = parse_arguments(argv)
        config = build_config(with_vertex_defaults(overrides, settings))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    target = settings["TARGET"]
    if target == "local":
        config = absolute_local_paths(config)
        try:
            check_local_inputs(config)
            fetch_data_archive(config)
        except (ConfigError, IngestError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        run_dir = run_local(config, Path(settings["OUTPUT_ROOT"]).resolve())
        print(describe_outputs(run_dir))
        if settings["RESULT_FILE"]:
            write_result(Path(settings["RESULT_FILE"]), run_dir)
        return 0
    if target in REMOTE_TARGETS:
        try:
            submit(target, config, settings)
        except SubmitError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except RemoteRunFailed as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    print(f"error: unknown TARGET={target}; choose local, kubeflow or vertex", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
