"""What the run service (feedback/retraining/runs.py) asks of a launcher, and what a launcher answers.

Every launcher has the methods of `Launcher`: start, owns, observe, cancel. One module per target:
local.py (a `make run` process on this host), kubeflow.py and vertex.py (remote runs, through
pipelines/kubeflow.py and pipelines/vertex.py: the same submit code as `make run`).

Every launcher passes the app's run id as the pipeline's `run_id` (run_config); select-champion
records it with its decision in the registry's history, and once a run succeeded its decision is
read from there by that id (catdog/registry.py decision_of_run), for local and remote runs alike
(decision_observation). A run that succeeded without recording one says so
(catdog.registry.no_decision_reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from catdog.registry import decision_of_run, no_decision_reason
from feedback.store.tables import RunState, TrainingRun
from feedback.retraining.config import TrainingTarget
from pipelines.config import PipelineConfig


@dataclass(frozen=True)
class RunHandle:
    """What a launcher tells the run service to record once a run started."""

    host: str | None = None
    pid: int | None = None
    process_started: float | None = None
    log_uri: str | None = None
    remote_id: str | None = None
    console_url: str | None = None


@dataclass(frozen=True)
class Observation:
    state: RunState
    step: str | None = None
    steps_done: int = 0
    reason: str | None = None  # why it failed, or the champion decision
    decision: dict | None = field(default=None)  # select-champion's decision once succeeded
    eta_s: float | None = None  # the running step's estimate of its remaining time (local runs' train step)
    detail: str | None = None  # what the running step does now, e.g. "frozen epoch 3/10"


class LaunchError(RuntimeError):
    """The run could not be started; the message says why."""


class Launcher(Protocol):
    def start(self, run_id: str, target: TrainingTarget, config: PipelineConfig) -> RunHandle:
        """Start the run (raise LaunchError when it cannot); the fields to record."""

    def owns(self, run: TrainingRun) -> bool:
        """Whether this app process can see the run's state (a local run: only on its host)."""

    def observe(self, run: TrainingRun) -> Observation:
        """The run's state now."""

    def cancel(self, run: TrainingRun) -> None:
        """Ask the run to end; observe says cancelled once it did."""


def run_config(run_id: str, config: PipelineConfig) -> PipelineConfig:
    """The run's parameters with the app's run id as the pipeline's run_id."""
    return config.model_copy(update={"run_id": run_id})


def decision_observation(registry_uri: str, run_id: str, done: int) -> Observation:
    """A succeeded run, with the champion decision it recorded in the registry (or that it recorded none)."""
    decision = decision_of_run(registry_uri, run_id)
    if decision is None:
        return Observation("succeeded", None, done, no_decision_reason(run_id, registry_uri))
    return Observation("succeeded", None, done, decision.get("reason"), decision)
