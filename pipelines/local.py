"""TARGET=local: the up-front checks, the run under kfp.local, its short terminal, and the crontab line.

    main_local(config, settings)   `make run` (TARGET=local): checks, then the run; its exit code
    run_local(config, output_root) the whole pipeline under kfp.local's SubprocessRunner
    crontab_line(cron, argv, name) `make schedule TARGET=local`: the line to add with `crontab -e`

Every input of a local run that can be checked up front is checked before anything runs, with one
`error: ...` line that says what to pass (exit code 2): DATA exists and has files, WEIGHTS is a file
or, for imagenet, is in the Keras cache or can be downloaded, the DATA archive downloads.

A local run prints one line per step with its time, the train step's phases and epochs
(pipelines/local_run.py: the terminal, the step events, the links), then the test metrics and the
champion decision; the full log goes to OUTPUT_ROOT/logs/run-<time>.log (its path printed first), or
to the terminal with VERBOSE=1. Its progress is a JSON-lines file (catdog/progress.py): PROGRESS_FILE,
else beside the log. RUNNER=container runs the compiled pipeline's steps in the component image
instead (pipelines/container_run.py). A failed step ends the run with `error: step <name> failed:
<its last error line>` (exit code 1). The run's decision is read from the registry by its run id.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
import urllib.request
from pathlib import Path

from catdog import REPO_ROOT
from catdog.progress import ENV_VAR as PROGRESS_ENV_VAR
from catdog.progress import ProgressWriter, read_progress
from catdog.registry import decision_of_run, describe_decision
from catdog.sources import IngestError, default_cache_dir, download_once, download_path, is_archive
from pipelines.config import ConfigError, PipelineConfig
from pipelines.container_run import ContainerRunError
from pipelines.container_run import run_pipeline as run_in_containers
from pipelines.cron import validate_cron
from pipelines.local_run import Console, ErrorLines, browsable, quiet_known_warnings, step_events, verbose_output
from pipelines.words import ALIASES, PATH_PARAMETERS, SCHEDULE_SETTINGS

KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
PROBE_TIMEOUT_S = 10


def absolute_local_paths(config: PipelineConfig) -> PipelineConfig:
    """Local steps run in other working directories: make relative local paths absolute ('' = unset)."""
    updates = {}
    for key in PATH_PARAMETERS:
        value = getattr(config, key)
        if value and "://" not in value and value.lower() not in ("imagenet", "none"):
            updates[key] = str(Path(value).expanduser().resolve())
    return config.model_copy(update=updates)


def check_local_inputs(config: PipelineConfig, weights_download: bool = True) -> None:
    """TARGET=local: what a run needs from this machine, checked before any step runs (ConfigError
    saying what to pass): a local DATA exists and holds files; WEIGHTS is a file, or for imagenet the
    Keras cache has the file or its download address answers. (An http(s) or gs:// DATA archive is
    downloaded up front by fetch_data_archive; check_data_download only asks whether it could be.)

    A feedback_uri that does not exist (yet) is fine: ingest reports that there is no feedback photo.
    weights_download=False leaves WEIGHTS=imagenet to the run (a schedule: its runs check it then).
    """
    data = config.data_uri
    if "://" not in data:
        path = Path(data)
        if not path.exists():
            raise ConfigError(
                f"DATA={data} does not exist: give a folder with one sub-folder per class, "
                "a .zip/.tar.gz archive, an http(s) archive URL or a gs:// prefix"
            )
        if path.is_dir() and not any(files for _, _, files in os.walk(path)):
            raise ConfigError(f"DATA={data} has no files: put the photos in one sub-folder per class "
                              "(e.g. cat/ and dog/), or give a .zip/.tar.gz archive")
    weights = config.weights
    if weights == "imagenet":
        if weights_download:
            check_imagenet_weights(config.backbone_alpha, config.image_size)
    elif "://" not in weights and weights.lower() != "none" and not Path(weights).is_file():
        raise ConfigError(f"WEIGHTS={weights} is not a file: give a .h5 path, a gs:// URI, imagenet or none")


def check_data_download(config: PipelineConfig) -> None:
    """An http(s) DATA archive not in the cache yet must answer (the feedback app asks at request time;
    `make run` downloads it up front instead)."""
    data = config.data_uri
    if not (data.startswith(("http://", "https://")) and is_archive(data)):
        return
    cached = download_path(data, default_cache_dir())
    if not cached.exists() and (problem := url_problem(data)):
        raise ConfigError(f"DATA={data} cannot be downloaded ({problem}). Offline? Pass DATA=path/to/"
                          f"class-folders or DATA=path/to/archive.zip, or put a copy of the archive at {cached}")


def url_problem(url: str) -> str | None:
    """Why `url` cannot be fetched now (None when a HEAD request answers)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=PROBE_TIMEOUT_S):
            return None
    except Exception as exc:  # offline, DNS, proxy, HTTP errors: all mean the same to a run
        return str(getattr(exc, "reason", None) or exc)


def imagenet_weights_file(alpha: float, image_size: int) -> str:
    """The file Keras' MobileNetV2(weights="imagenet", include_top=False) loads: sizes other than
    96/128/160/192/224 use the 224 weights."""
    rows = image_size if image_size in (96, 128, 160, 192, 224) else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"


def keras_cache_dirs() -> list[Path]:
    """Where keras.utils.get_file keeps downloads: $KERAS_HOME or ~/.keras (/tmp/.keras when not writable)."""
    home = Path(os.environ["KERAS_HOME"]) if "KERAS_HOME" in os.environ else Path.home() / ".keras"
    return [home / "models", Path("/tmp/.keras/models")]


def check_imagenet_weights(alpha: float, image_size: int) -> None:
    name = imagenet_weights_file(alpha, image_size)
    if any((folder / name).is_file() for folder in keras_cache_dirs()):
        return
    url = KERAS_WEIGHTS_URL + name
    problem = url_problem(url)
    if problem:
        raise ConfigError(f"WEIGHTS=imagenet: {name} is not in the Keras cache ({keras_cache_dirs()[0]}) and "
                          f"cannot be downloaded ({problem}). Pass WEIGHTS=path/to/{name} (download it from {url}), "
                          f"or put it at {keras_cache_dirs()[0] / name}")


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


def run_local(config: PipelineConfig, output_root: Path, progress: ProgressWriter | None = None,
              errors: ErrorLines | None = None) -> Path:
    """Run the whole pipeline with kfp.local's SubprocessRunner; return the run's output folder.

    progress: where the run's events go (the steps', and through $CATDOG_PROGRESS the steps' own);
    errors: the error lines of the output so far (a failed step's event names its last one).
    """
    from kfp import local

    from pipelines.training_pipeline import STEPS, training_pipeline

    progress = progress or ProgressWriter(None)
    output_root.mkdir(parents=True, exist_ok=True)
    before = set(output_root.iterdir())
    quiet_known_warnings()
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(output_root))
    progress.emit("run", steps=list(STEPS))
    saved = os.environ.get(PROGRESS_ENV_VAR)
    if progress.path:
        os.environ[PROGRESS_ENV_VAR] = str(progress.path)  # the steps' processes inherit it
    try:
        with step_events(progress, errors or ErrorLines()):
            training_pipeline(**config.pipeline_arguments())
    finally:
        if saved is None:
            os.environ.pop(PROGRESS_ENV_VAR, None)
        else:
            os.environ[PROGRESS_ENV_VAR] = saved
    new = sorted(set(output_root.iterdir()) - before - {output_root / "logs"}, key=lambda p: p.stat().st_mtime)
    if not new:
        raise RuntimeError(f"the local run wrote nothing under {output_root}")
    return new[-1]


def read_evaluation(run_dir: Path) -> dict | None:
    """evaluate's test metrics (None when evaluate did not run)."""
    evaluation = run_dir / "evaluate" / "evaluation"
    return json.loads(evaluation.read_text()) if evaluation.is_file() else None


def metrics_line(evaluation: dict) -> str:
    """`test (1000 photos): accuracy 0.979, precision 0.969, ...` (and the feedback photos' accuracy)."""
    shown = ", ".join(f"{key} {evaluation[key]:.3f}" for key in ("accuracy", "precision", "recall", "f1", "auc")
                      if evaluation.get(key) is not None)
    line = f"test ({evaluation['n']} photos): {shown}"
    if evaluation.get("feedback_accuracy") is not None:
        line += f"; feedback photos among them ({evaluation['feedback_n']}): accuracy {evaluation['feedback_accuracy']:.3f}"
    return line




def describe_outputs(run_dir: Path, decision_text: list[str] = ()) -> str:
    """One line per task output (where it landed; HTML and Markdown through their browsable link),
    then the test metrics and `decision_text` (catdog.registry.describe_decision)."""
    links = browsable(run_dir)
    lines = [f"run outputs: {run_dir}"]
    for task_dir in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        for output in sorted(task_dir.iterdir()):
            if output.name != "executor_output.json" and output not in links.values():
                lines.append(f"  {task_dir.name}.{output.name}: {links.get(output, output)}")
    evaluation = read_evaluation(run_dir)
    if evaluation is not None:
        lines.append(metrics_line(evaluation))
    lines.extend(decision_text)
    return "\n".join(lines)



def fail(message: str, code: int, progress: ProgressWriter | None = None) -> int:
    """The one `error: ...` line (and the run's end event, whose error the app shows as the reason)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    if progress is not None:
        progress.emit("end", status="failed", error=message)
    return code


def main_local(config: PipelineConfig, settings: dict[str, str]) -> int:
    """TARGET=local: the up-front checks, then the run with its short terminal (module docstring)."""
    output_root = Path(settings["OUTPUT_ROOT"]).expanduser().resolve()
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"-{int(now * 1000) % 1000:03d}"  # two runs a second
    progress_path = Path(settings["PROGRESS_FILE"] or output_root / "logs" / f"run-{stamp}.progress.jsonl")
    progress = ProgressWriter(progress_path) if settings["PROGRESS_FILE"] else None
    config = absolute_local_paths(config)
    try:
        fetch_data_archive(config)  # first: offline, the data's message comes before the weights'
        check_local_inputs(config)
    except (ConfigError, IngestError) as exc:
        return fail(str(exc), 2, progress)
    progress_path.parent.mkdir(parents=True, exist_ok=True)
    progress = ProgressWriter(progress_path)
    verbose = settings["VERBOSE"] not in ("", "0")
    log_path = None if verbose else output_root / "logs" / f"run-{stamp}.log"
    if log_path:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        print(f"full log: {log_path} (VERBOSE=1 prints it here)", flush=True)
    terminal, errors = sys.stdout, ErrorLines()
    console = Console(progress_path, terminal, open_lines=not verbose).start()
    try:
        with verbose_output(log_path, errors):
            run_dir = (run_in_containers(config, settings, output_root, progress=progress, errors=errors)
                       if settings["RUNNER"] == "container"
                       else run_local(config, output_root, progress, errors))  # container: pipelines/container_run.py
    except ContainerRunError as exc:  # found before any step: what the user can fix
        console.close()
        return fail(str(exc), 2, progress)
    except Exception as exc:  # kfp.local raises when a step failed; anything else is as bad
        console.close()
        failed = read_progress(progress_path)
        cause = failed.error or f"{type(exc).__name__}: {exc}"
        return fail(cause + (f" (full log: {log_path})" if log_path else ""), 1, progress)
    console.close()
    evaluation = read_evaluation(run_dir) or {}
    decision = decision_of_run(config.registry_uri, config.run_id)
    progress.emit("end", status="succeeded", run_id=config.run_id, decision=decision,
                  metrics={k: v for k, v in evaluation.items() if isinstance(v, (int, float))})  # numbers, not curves
    print(describe_outputs(run_dir, describe_decision(config.run_id, config.registry_uri, decision)), flush=True)
    return 0


# --- a schedule: the crontab line ---------------------------------------------------------------

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
