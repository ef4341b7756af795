"""Where and how the app's retraining runs go: the `make run` settings, per target.

    python -m feedback.web.server TARGET=local,vertex DATA=... REGISTRY=... frozen_epochs=2 \
        VERTEX_DATA=gs://bucket/data VERTEX_REGISTRY=gs://bucket/registry PROJECT=... IMAGE=...

The words are `make run`'s (pipelines/words.py): upper-case ones are runner settings (TARGET,
OUTPUT_ROOT, WEIGHTS and the remote ones: IMAGE, PROJECT, REGION, PIPELINE_ROOT, KFP_HOST, ...),
DATA/REGISTRY/WEIGHTS name the data, the registry and the backbone weights, lower-case ones are
pipeline parameters every run starts from. TARGET may list several targets (the first is the
default); `<TARGET>_<KEY>` (e.g. VERTEX_DATA) overrides a key for that target only. Every run
reads the app's published photos as `feedback_uri`. A request may override pipeline parameters,
except the ones naming data and places (PROTECTED_PARAMETERS): an HTTP client never picks paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipelines.config import ConfigError, PipelineConfig, build_config
from pipelines.local import absolute_local_paths, check_data_download, check_local_inputs
from pipelines.remote import REMOTE_TARGETS, RemoteSettings, SubmitError, check_remote
from pipelines.words import ALIASES, RUNNER_SETTINGS, parse_arguments, with_vertex_defaults

TARGETS = ("local", *REMOTE_TARGETS)
# set by the app and its settings, never by a request
PROTECTED_PARAMETERS = ("data_uri", "feedback_uri", "registry_uri", "weights", "kserve_manifest", "run_id")
# runner settings the app decides itself for each run
APP_OWNED_SETTINGS = ("RUN_NAME", "WAIT")


@dataclass(frozen=True)
class TrainingTarget:
    name: str  # local, kubeflow or vertex
    settings: dict[str, str]  # upper-case runner settings
    base: PipelineConfig  # what every run on this target starts from
    remote: RemoteSettings | None = None  # checked settings of a remote target

    @property
    def registry_uri(self) -> str:
        return self.base.registry_uri


@dataclass(frozen=True)
class TrainingConfig:
    targets: dict[str, TrainingTarget] = field(default_factory=dict)  # in the order given; first = default

    @property
    def default(self) -> TrainingTarget:
        return next(iter(self.targets.values()))

    def target(self, name: str | None) -> TrainingTarget:
        if not name:
            return self.default
        if name not in self.targets:
            raise ConfigError(f"target: {name!r} is not configured here; choose from {list(self.targets)}")
        return self.targets[name]

    def run_config(self, target: TrainingTarget, parameters: dict | None) -> PipelineConfig:
        """The run's parameters: the target's, then a request's overrides (validated; paths refused)."""
        parameters = parameters or {}
        protected = sorted(set(parameters) & set(PROTECTED_PARAMETERS))
        if protected:
            raise ConfigError(f"{', '.join(protected)}: set by the app (DATA, REGISTRY, WEIGHTS, FEEDBACK_URI, "
                              "the run's id), "
                              "not by a request")
        config = build_config(parameters, base=target.base)
        if target.name == "local":  # what `make run` checks before any step, so a request fails now (422)
            check_local_inputs(config)
            check_data_download(config)
        return config


def known_settings(targets: list[str]) -> dict[str, str]:
    """Accepted upper-case words: the runner's, and each one prefixed by a configured target."""
    shared = {k: v for k, v in RUNNER_SETTINGS.items() if k not in APP_OWNED_SETTINGS}
    per_target = {f"{t.upper()}_{key}": "" for t in targets for key in [*shared, *ALIASES] if key != "TARGET"}
    return {**shared, **per_target}


def parse_training_words(words: list[str], feedback_uri: str) -> TrainingConfig:
    """`make run`-style words -> one checked TrainingTarget per target; raises ConfigError."""
    target_word = next((w for w in reversed(words) if w.startswith("TARGET=")), "TARGET=local")
    names = [n.strip() for n in target_word.partition("=")[2].split(",") if n.strip()] or ["local"]
    unknown = [n for n in names if n not in TARGETS]
    if unknown or len(set(names)) != len(names):
        raise ConfigError(f"TARGET={','.join(names)}: list distinct targets among {', '.join(TARGETS)}")
    overrides, settings = parse_arguments([w for w in words if not w.startswith("TARGET=")], known_settings(names))
    targets = {}
    for name in names:
        prefix = f"{name.upper()}_"
        own = {k.removeprefix(prefix): v for k, v in settings.items() if k.startswith(prefix) and v != ""}
        target_settings = {k: v for k, v in settings.items() if not any(k.startswith(f"{t.upper()}_") for t in names)}
        target_settings.update({k: v for k, v in own.items() if k not in ALIASES})
        target_overrides = {**overrides, **{ALIASES[k]: v for k, v in own.items() if k in ALIASES},
                            "feedback_uri": feedback_uri}
        target_settings["TARGET"] = name
        targets[name] = _checked_target(name, target_overrides, target_settings)
    return TrainingConfig(targets)


def _checked_target(name: str, overrides: dict[str, str], settings: dict[str, str]) -> TrainingTarget:
    try:
        base = build_config(with_vertex_defaults(overrides, settings))
    except ConfigError as exc:
        raise ConfigError(f"TARGET={name}: {exc}") from None
    if name == "local":
        return TrainingTarget(name, settings, absolute_local_paths(base))
    if not base.feedback_uri.startswith("gs://"):
        raise ConfigError(f"TARGET={name} reads the published photos from FEEDBACK_URI, which must then be a "
                          f"gs:// prefix (got {base.feedback_uri!r})")
    try:
        remote = check_remote(name, base, {**settings, "WAIT": "0"})
    except SubmitError as exc:
        raise ConfigError(str(exc)) from None
    return TrainingTarget(name, settings, base, remote)


def output_root(target: TrainingTarget) -> Path:
    return Path(target.settings["OUTPUT_ROOT"]).expanduser().resolve()
