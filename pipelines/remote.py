"""What TARGET=kubeflow and TARGET=vertex share: their settings, the checks made before any client is
built, and the compiled pipeline with the pushed image. The targets themselves: pipelines/kubeflow.py
and pipelines/vertex.py (each submits a run and creates or deletes a schedule).

Everything that can be checked here is checked before a client is built, so a missing setting, a
local data path, absent Google credentials or an unreachable KFP host fail within seconds, naming
the setting to fix (check_remote: every problem in one SubmitError). The compiled YAML keeps the
placeholder image (`make compile` stays machine-independent); each submission rewrites it to IMAGE
in a temporary copy (pipeline_package), and sizes the train step there when TRAIN_CPU, TRAIN_MEMORY
or TRAIN_ACCELERATOR(_COUNT) are given (pipelines/hardware.py).

The run's id (config.run_id, made by pipelines/run.py when not given) is printed with the submission;
with WAIT=1, once the run succeeded, its champion decision is read from the registry by that id
(catdog/registry.py decision_of_run) and printed (print_decision), or that it recorded none.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from catdog import REPO_ROOT
from components import BASE_IMAGE
from pipelines.config import PipelineConfig
from pipelines.hardware import (
    AS_COMPILED,
    HARDWARE_SETTINGS,
    TrainHardware,
    parse_train_hardware,
    size_train_step,
)

PLACEHOLDER_IMAGE = BASE_IMAGE
PIPELINE_NAME = "catdog-training"  # pipelines/training_pipeline.py (a test keeps them equal)
PIPELINE_YAML = REPO_ROOT / "compiled" / "training_pipeline.yaml"
REMOTE_TARGETS = ("vertex", "kubeflow")
# Upper-case `make run` settings of the remote targets, with their defaults.
REMOTE_SETTINGS = {
    "IMAGE": "",  # <registry>/catdog-components:<tag>, as pushed by `make images`
    "PROJECT": "",
    "REGION": "",
    "PIPELINE_ROOT": "",
    "SERVICE_ACCOUNT": "",
    "KFP_HOST": "",
    "KFP_NAMESPACE": "",
    "EXPERIMENT": "catdog",
    "RUN_NAME": "",
    "LABELS": "",
    "CACHE": "0",
    "WAIT": "0",
    **HARDWARE_SETTINGS,  # the train step's CPU, memory and accelerator ('' = as compiled: 4 CPUs, 8G)
}
_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


class SubmitError(RuntimeError):
    """A remote submission refused before (or by) the service; the message says what to set."""


class RemoteRunFailed(RuntimeError):
    """WAIT=1 and the remote run ended in a state other than success."""


@dataclass(frozen=True)
class RemoteSettings:
    target: str
    image: str
    project: str
    region: str
    pipeline_root: str
    service_account: str
    kfp_host: str
    kfp_namespace: str
    kfp_token: str  # from the environment (KFP_TOKEN), never from the command line
    experiment: str
    run_name: str
    labels: dict[str, str]
    enable_caching: bool
    wait: bool
    train_hardware: TrainHardware = AS_COMPILED


def parse_flag(name: str, value: str) -> bool:
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise SubmitError(f"{name}={value!r}: use 1 or 0")


def parse_labels(text: str) -> dict[str, str]:
    """'team=ml,env=dev' -> {'team': 'ml', 'env': 'dev'}, checked against Vertex AI's label rules."""
    labels = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
            raise SubmitError(
                f"LABELS: bad label {item!r}; use key=value pairs separated by commas, lower-case "
                "letters, digits, _ and - (keys start with a letter, 63 characters at most)"
            )
        labels[key] = value
    return labels


def default_run_name(now: datetime | None = None) -> str:
    return f"{PIPELINE_NAME}-{(now or datetime.now(timezone.utc)):%Y%m%d-%H%M%S}"


def check_image(image: str) -> str:
    """The pushed component image; the placeholder (or a name without a registry) cannot be pulled."""
    hint = "set IMAGE=<registry>/catdog-components:<tag> (what `make images IMAGE_REGISTRY=...` pushed)"
    if not image:
        raise SubmitError(f"IMAGE is not set: {hint}")
    if image == PLACEHOLDER_IMAGE or "/" not in image.split("@")[0].rsplit(":", 1)[0]:
        raise SubmitError(f"IMAGE={image} is not a pushed image a remote cluster can pull: {hint}")
    return image


def remote_path_problems(config: PipelineConfig) -> list[str]:
    """A remote run cannot read this machine's files: data, registry and weights must be remote URIs."""
    problems = []
    if not config.data_uri.startswith(("gs://", "https://", "http://")):
        problems.append(f"DATA={config.data_uri} is a local path; give a gs:// prefix or archive, or an http(s) archive URL")
    if not config.registry_uri.startswith("gs://"):
        problems.append(f"REGISTRY={config.registry_uri} is a local path; give a gs:// prefix")
    if not (config.weights.startswith("gs://") or config.weights.lower() in ("imagenet", "none")):
        problems.append(f"WEIGHTS={config.weights} is a local path; give a gs:// URI, imagenet or none")
    if problems:
        problems.append("a remote run cannot read a folder on this machine (upload with gcloud storage cp -r)")
    return problems


def remote_settings(target: str, settings: dict[str, str], *, submitting: bool = True) -> RemoteSettings:
    """Typed settings for a remote target; every missing or malformed setting is reported at once.

    submitting=False (deleting a schedule) needs only what locates the service.
    """
    s = {**REMOTE_SETTINGS, **settings}
    problems = []
    if target == "vertex":
        if not s["PROJECT"]:
            problems.append("PROJECT is not set: the Google Cloud project id, e.g. PROJECT=my-project")
        if not s["REGION"]:
            problems.append("REGION is not set: a Vertex AI region, e.g. REGION=us-central1")
        elif not _REGION.match(s["REGION"]):
            problems.append(f"REGION={s['REGION']} is not a Google Cloud region such as us-central1")
        if submitting and not s["PIPELINE_ROOT"].startswith("gs://"):
            problems.append(
                f"PIPELINE_ROOT={s['PIPELINE_ROOT'] or '(not set)'}: Vertex AI needs a gs:// prefix for "
                "run artifacts, e.g. PIPELINE_ROOT=gs://my-bucket/pipeline-root"
            )
    elif target == "kubeflow":
        if not s["KFP_HOST"]:
            problems.append(
                "KFP_HOST is not set: the KFP API endpoint, e.g. KFP_HOST=http://localhost:8080 after "
                "kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80"
            )
    else:
        raise SubmitError(f"unknown remote target {target!r}; choose one of {REMOTE_TARGETS}")
    train_hardware = AS_COMPILED
    if submitting:
        try:
            check_image(s["IMAGE"])
        except SubmitError as exc:
            problems.append(str(exc))
        train_hardware, hardware_problems = parse_train_hardware(target, s)
        problems += hardware_problems
    try:
        labels = {"app": "catdog", "pipeline": PIPELINE_NAME, **parse_labels(s["LABELS"])}
        enable_caching, wait = parse_flag("CACHE", s["CACHE"]), parse_flag("WAIT", s["WAIT"])
    except SubmitError as exc:
        problems.append(str(exc))
    if problems:
        raise SubmitError(f"TARGET={target}: " + "; ".join(problems))
    host = s["KFP_HOST"].rstrip("/")
    if host and not host.startswith(("http://", "https://")):
        host = "https://" + host  # what kfp.Client does with a bare host
    return RemoteSettings(
        target=target, image=s["IMAGE"], project=s["PROJECT"], region=s["REGION"],
        pipeline_root=s["PIPELINE_ROOT"], service_account=s["SERVICE_ACCOUNT"], kfp_host=host,
        kfp_namespace=s["KFP_NAMESPACE"], kfp_token=os.environ.get("KFP_TOKEN", ""),
        experiment=s["EXPERIMENT"] or "catdog",
        run_name=s["RUN_NAME"] or default_run_name(), labels=labels,
        enable_caching=enable_caching, wait=wait, train_hardware=train_hardware,
    )


# --- the compiled pipeline with the pushed image ------------------------------------------------

def substitute_image(source: Path, image: str, dest: Path, placeholder: str = PLACEHOLDER_IMAGE) -> int:
    """Write `source` to `dest` with every executor image equal to `placeholder` set to `image`.

    Returns how many executors changed; none is an error (the YAML was compiled with another image).
    """
    documents = list(yaml.safe_load_all(source.read_text()))
    executors = documents[0].get("deploymentSpec", {}).get("executors", {})
    changed = 0
    for executor in executors.values():
        container = executor.get("container")
        if container and container.get("image") == placeholder:
            container["image"] = image
            changed += 1
    if not changed:
        raise SubmitError(f"no executor in {source} uses the image {placeholder}: run make compile")
    dest.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return changed


@contextlib.contextmanager
def pipeline_package(image: str, hardware: TrainHardware = AS_COMPILED, source: Path = PIPELINE_YAML) -> Iterator[Path]:
    """A temporary copy of the compiled pipeline that runs `image`, its train step sized by
    `hardware`; removed on exit."""
    if not source.is_file():
        raise SubmitError(f"{source} is missing: run make compile")
    with tempfile.TemporaryDirectory(prefix="catdog-submit-") as tmp:
        dest = Path(tmp) / source.name
        substitute_image(source, check_image(image), dest)
        if hardware != AS_COMPILED:
            try:
                size_train_step(dest, hardware)
            except ValueError as exc:
                raise SubmitError(f"{source}: {exc}") from None
        yield dest


def check_remote(target: str, config: PipelineConfig, settings: dict[str, str]) -> RemoteSettings:
    """Settings and parameter paths for a remote run, every problem reported in one SubmitError."""
    problems = remote_path_problems(config)
    try:
        s = remote_settings(target, settings)
    except SubmitError as exc:
        problems.insert(0, str(exc))
    if problems:
        raise SubmitError("; ".join(problems))
    return s


def print_decision(config: PipelineConfig) -> None:
    """After a run that succeeded (WAIT=1): its champion decision, read from the registry by run id."""
    from catdog.registry import decision_of_run, describe_decision

    try:
        decision = decision_of_run(config.registry_uri, config.run_id)
    except Exception as exc:  # no credentials for the bucket here, a network error: the run itself succeeded
        print(f"could not read the decision of run {config.run_id} from {config.registry_uri}: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return
    print("\n".join(describe_decision(config.run_id, config.registry_uri, decision)), flush=True)


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
