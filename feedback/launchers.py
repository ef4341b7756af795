"""Start, watch and stop pipeline runs: a local process (kfp.local), a KFP run, a Vertex PipelineJob.

Every launcher has the methods of `Launcher`, which the run service calls; the remote ones are in
feedback/remote_launchers.py.

A local run is `python -m pipelines.run TARGET=local ...` in its own process group (the app never
trains in its own process), its output in <RUNS_DIR>/<id>/log.txt and, once it succeeded, its
champion decision in <RUNS_DIR>/<id>/result.json (pipelines.run's RESULT_FILE). Any app process on
the same host can watch it after a restart: the pid and the process's start time identify it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil

from feedback.models import RunState, TrainingRun
from feedback.retrain_config import TrainingTarget, output_root
from pipelines.config import PipelineConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
LOG_TAIL_BYTES = 8192
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Executing task '([^']+)'")
_FINISHED = re.compile(r"Task '([^']+)' finished with status SUCCESS")
_INNER_FAILURE = re.compile(r"Inner task failed: '([^']+)'")
TERMINATE_GRACE_S = 10


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


def read_tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    """The last `limit` bytes of a log, ANSI colours removed ('' when there is none yet)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - limit))
            return _ANSI.sub("", f.read().decode("utf-8", "replace"))
    except FileNotFoundError:
        return ""


def log_progress(text: str) -> tuple[str | None, int]:
    """(the step running now, steps finished) from kfp.local's log lines."""
    started = _STARTED.findall(text)
    finished = _FINISHED.findall(text)
    running = [s for s in started if s not in finished]
    return (running[-1] if running else None), len(set(finished))


def failure_reason(text: str, exit_code: int | None) -> str:
    """The failed step and the last error line of a local run's log."""
    failed = _INNER_FAILURE.findall(text)
    errors = [ln.strip() for ln in text.splitlines() if re.match(r"^\w*(Error|Exception)\b", ln.strip())]
    parts = [f"step {failed[-1]} failed" if failed else "the pipeline process ended without a result"]
    if errors:
        parts.append(errors[-1][:500])
    if exit_code is not None:
        parts.append(f"exit code {exit_code}")
    return "; ".join(parts)


class LocalLauncher:
    def __init__(self, runs_dir: Path):
        self.runs_dir = Path(runs_dir)
        self._children: dict[int, subprocess.Popen] = {}  # started by this process: reaped here
        self._lock = threading.Lock()

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def command(self, run_id: str, target: TrainingTarget, config: PipelineConfig) -> list[str]:
        words = [f"{key}={value}" for key, value in config.pipeline_arguments().items()]
        return [sys.executable, "-m", "pipelines.run", "TARGET=local", f"OUTPUT_ROOT={output_root(target)}",
                f"RESULT_FILE={self.run_dir(run_id) / 'result.json'}", *words]

    def start(self, run_id: str, target: TrainingTarget, config: PipelineConfig) -> RunHandle:
        folder = self.run_dir(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / "log.txt"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
               "PYTHONUNBUFFERED": "1"}
        env.pop("APP_TOKEN", None)  # the pipeline has no use for the app's secret
        try:
            with open(log, "ab") as out:
                child = subprocess.Popen(self.command(run_id, target, config), cwd=REPO_ROOT, env=env,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # its own group: Stop ends its tasks too
        except OSError as exc:
            raise LaunchError(f"cannot start the local pipeline process: {exc}") from None
        with self._lock:
            self._children[child.pid] = child
        return RunHandle(host=socket.gethostname(), pid=child.pid, process_started=_create_time(child.pid),
                         log_uri=str(log))

    def owns(self, run: TrainingRun) -> bool:
        """Only the host that started a local run can see its process."""
        return run.host == socket.gethostname()

    def _exit_code(self, pid: int) -> int | None:
        with self._lock:
            child = self._children.get(pid)
        return child.poll() if child is not None else None

    def _alive(self, run: TrainingRun) -> bool:
        if run.pid is None:
            return False
        self._exit_code(run.pid)  # reap our own child, or it lingers as a zombie
        try:
            process = psutil.Process(run.pid)
            return (process.status() != psutil.STATUS_ZOMBIE
                    and (run.process_started is None or abs(process.create_time() - run.process_started) < 1))
        except psutil.Error:
            return False

    def observe(self, run: TrainingRun) -> Observation:
        text = read_tail(Path(run.log_uri)) if run.log_uri else ""
        step, done = log_progress(text)
        result = self.run_dir(run.id) / "result.json"
        if result.is_file():
            decision = json.loads(result.read_text())["decision"]
            return Observation("succeeded", None, done, decision and decision["reason"], decision)
        if self._alive(run):
            return Observation("running", step, done)
        if run.cancel_requested:
            return Observation("cancelled", step, done, "stopped on request")
        return Observation("failed", step, done, failure_reason(text, self._exit_code(run.pid) if run.pid else None))

    def cancel(self, run: TrainingRun) -> None:
        """SIGTERM to the run's process group (kfp.local's task processes included), SIGKILL after a grace."""
        if not self._alive(run):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(run.pid, signal.SIGTERM)
        threading.Thread(target=self._kill_after_grace, args=(run.pid, run.process_started), daemon=True).start()

    def _kill_after_grace(self, pid: int, started: float | None) -> None:
        try:
            psutil.Process(pid).wait(TERMINATE_GRACE_S)
        except psutil.TimeoutExpired:
            now_started = _create_time(pid)
            if now_started is not None and (started is None or abs(now_started - started) < 1):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
        except psutil.Error:
            pass
        self._exit_code(pid)


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None
