"""What the Kubeflow and Vertex AI launchers (kubeflow.py, vertex.py) share: the run's name, and the
pipeline's progress read from the service's task states.

Only the pipeline's own steps count (feedback.retraining.runs.PIPELINE_STEPS): the services also
list the root DAG, the condition, drivers. The run service keeps progress moving forward only (a
task list that lags behind is ignored), and a failed run shows the step that failed.
"""

from __future__ import annotations

from feedback.store.tables import RunState, TrainingRun
from feedback.retraining.launchers.base import Observation
from feedback.retraining.runs import PIPELINE_STEPS


def run_name(run_id: str) -> str:
    return f"catdog-retrain-{run_id[:8]}"


def step_name(name: str | None) -> str:
    """A task's name as the service shows it ('select champion', 'select_champion') -> 'select-champion'."""
    return (name or "").strip().lower().replace(" ", "-").replace("_", "-")


def progress(tasks: list[tuple[str | None, str | None]]) -> tuple[str | None, int, list[str]]:
    """(step running now, own steps succeeded, own steps failed) from (task name, state name) pairs.

    Only the pipeline's own steps count: the services also list the root DAG, the condition, drivers.
    """
    own = [(step_name(n), s) for n, s in tasks if step_name(n) in PIPELINE_STEPS]
    running = [n for n, s in own if s == "RUNNING"]
    done = {n for n, s in own if s == "SUCCEEDED"}
    failed = sorted({n for n, s in own if s == "FAILED"}, key=PIPELINE_STEPS.index)
    return (running[-1] if running else None), len(done), failed


def ended(state: RunState, run: TrainingRun, step: str | None, done: int, failed: list[str], error: str,
          service: str) -> Observation:
    """The observation of a failed or cancelled run: the failed steps and the service's error."""
    if state == "cancelled":
        return Observation("cancelled", step, done, "stopped on request" if run.cancel_requested
                           else f"cancelled in {service}")
    parts = [f"step {', '.join(failed)} failed" if failed else f"the {service} run failed", error]
    return Observation("failed", failed[0] if failed else step, done, "; ".join(p for p in parts if p))
