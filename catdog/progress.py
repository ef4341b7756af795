"""Run progress as JSON lines: the one structured record of how far a local pipeline run got.

Writers append one JSON object a line ("t": Unix time, "event": its kind) to the progress file:
  - pipelines.run, the orchestrating process (kfp.local's task execution, wrapped in
    pipelines/local_run.py, so it works alike under the SubprocessRunner and the DockerRunner):
      {"event": "run", "steps": ["ingest", ...]}
      {"event": "step", "step": "train", "status": "started"}
      {"event": "step", "step": "train", "status": "succeeded"|"failed", "seconds": 41.2[, "error": "..."]}
      {"event": "end", "status": "succeeded"|"failed"[, "error": "..."][, "metrics": {...}][, "decision": {...}]}
  - the code inside a step, through $CATDOG_PROGRESS (the same file; unset outside a local run, e.g.
    on Kubeflow or Vertex AI, where nothing is written and the step logs as before):
      {"event": "phase", "step": "train", "phase": "features", "done": 300, "total": 3556, "eta_s": 40}
      {"event": "epoch", "step": "train", "phase": "frozen", "epoch": 3, "epochs": 10, "seconds": 1.2,
       "eta_s": 9, "accuracy": ..., "val_accuracy": ..., ...}

Readers fold the events into a RunProgress (`read_progress`): pipelines.run's terminal lines and
feedback/retraining/launchers/local.py's LocalLauncher. Progress only moves forward: the file is only appended to,
and `done` is the set of steps that finished (a later event never removes one). A line not yet
complete (a writer mid-write) is left for the next read.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ENV_VAR = "CATDOG_PROGRESS"
_LOCK = threading.Lock()  # one writer per process may be called from several threads


class ProgressWriter:
    """Appends events to `path`; a writer without a path writes nothing (see the module docstring)."""

    def __init__(self, path: str | Path | None, step: str | None = None):
        self.path = Path(path) if path else None
        self.step = step

    @classmethod
    def from_environment(cls, step: str) -> ProgressWriter:
        return cls(os.environ.get(ENV_VAR) or None, step)

    def emit(self, event: str, **fields) -> None:
        if self.path is None:
            return
        record = {"t": round(time.time(), 3), "event": event, **({"step": self.step} if self.step else {}), **fields}
        line = json.dumps(record, default=float) + "\n"
        with _LOCK, open(self.path, "a", encoding="utf-8") as f:  # O_APPEND: one write() a line
            f.write(line)


class Throttle:
    """True at most every `interval_s` seconds, and always for the last item (done == total)."""

    def __init__(self, interval_s: float = 5.0):
        self.interval_s = interval_s
        self._last = float("-inf")

    def __call__(self, done: int, total: int) -> bool:
        now = time.monotonic()
        if done >= total or now - self._last >= self.interval_s:
            self._last = now
            return True
        return False


def read_events(path: str | Path) -> list[dict]:
    """The complete lines of a progress file ([] when it does not exist yet)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    events = []
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # a writer mid-write
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # not ours; a progress file holds nothing else
    return events


@dataclass
class RunProgress:
    steps: list[str] = field(default_factory=list)  # the pipeline's steps in order
    done: list[str] = field(default_factory=list)  # steps that succeeded, in the order they did
    step: str | None = None  # running now, or the one it failed in
    state: str = "running"  # running, succeeded, failed
    error: str | None = None
    started_at: float | None = None
    last: dict | None = None  # the latest phase or epoch event of the running step
    metrics: dict | None = None
    decision: dict | None = None

    @property
    def steps_done(self) -> int:
        return len(self.done)

    @property
    def steps_total(self) -> int:
        """Every step; once the run succeeded, the steps that ran (deploy runs only on a promotion)."""
        return len(self.done) if self.state == "succeeded" else len(self.steps)

    @property
    def eta_s(self) -> float | None:
        """The running step's estimate of its remaining seconds, when it gives one."""
        return (self.last or {}).get("eta_s") if self.state == "running" else None

    def apply(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "run":
            self.steps, self.started_at = list(event["steps"]), event.get("t")
        elif kind == "step":
            name, status = event["step"], event["status"]
            if status == "started":
                self.step, self.last = name, None
            elif status == "succeeded":
                if name not in self.done:
                    self.done.append(name)
                self.step, self.last = (None, None) if self.step == name else (self.step, self.last)
            else:
                self.step, self.last = name, None
                self.error = f"step {name} failed: {event.get('error') or 'see the log'}"
        elif kind in ("phase", "epoch") and event.get("step") == self.step:
            self.last = event
        elif kind == "end":
            self.state = event["status"]
            self.error = event.get("error") or self.error
            self.metrics, self.decision = event.get("metrics"), event.get("decision")
            if self.state == "succeeded":
                self.step = None


def read_progress(path: str | Path) -> RunProgress:
    progress = RunProgress()
    for event in read_events(path):
        progress.apply(event)
    return progress


def duration(seconds: float) -> str:
    """12 s, 3 min 05 s, 1 h 02 min."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def epoch_line(phase: str, epoch: int, epochs: int, seconds: float, eta_s: float | None, values: dict) -> str:
    """`frozen epoch 3/10: accuracy 0.931, val_accuracy 0.966 (1 s, at most 9 s left)`."""
    shown = ", ".join(f"{k} {values[k]:.3f}" for k in ("accuracy", "val_accuracy") if k in values)
    left = f", at most {duration(eta_s)} left" if eta_s is not None and epoch < epochs else ""
    return f"{phase} epoch {epoch}/{epochs}: {shown} ({duration(seconds)}{left})"
