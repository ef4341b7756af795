"""Local retraining runs: `python -m pipelines.run TARGET=local ...` in its own process group (the app
never trains in its own process), its full output in <RUNS_DIR>/<id>/log.txt (VERBOSE=1), its progress
events in <RUNS_DIR>/<id>/progress.jsonl (PROGRESS_FILE; catdog/progress.py: the step running, the
steps done, the train step's estimate, the error line a failure ended with, and the end). Progress
is read from that file, never from the log text, and only moves forward. Any app process on the same host can watch a run
after a restart: the pid and the process's start time identify it.

The pipeline process gets only the environment it needs (PIPELINE_ENVIRONMENT, PIPELINE_ENVIRONMENT_PREFIXES:
paths, locale, proxies and certificates, caches, TensorFlow/CUDA/thread settings, Google Cloud and
Kubernetes credentials for gs:// and deploy targets), never the app's own settings and secrets
(DATABASE_URL, APP_TOKEN, PREDICTOR_URL, ...).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import psutil

from catdog import REPO_ROOT
from catdog.progress import read_progress
from feedback.store.tables import TrainingRun
from feedback.retraining.config import TrainingTarget, output_root
from feedback.retraining.launchers.base import LaunchError, Observation, RunHandle, decision_observation, run_config
from pipelines.config import PipelineConfig

LOG_TAIL_BYTES = 8192
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# the last line of a Python traceback (`ValueError: ...`) or pipelines.run's own `error: ...`
_ERROR_LINE = re.compile(r"^(error: .+|([A-Za-z_]\w*\.)*[A-Za-z_]\w*(Error|Exception|Exit|Interrupt)(: .+)?)$")
TERMINATE_GRACE_S = 10
PIPELINE_ENVIRONMENT = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP", "LD_LIBRARY_PATH",
    "VIRTUAL_ENV", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "KUBECONFIG", "STORAGE_EMULATOR_HOST",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
})
PIPELINE_ENVIRONMENT_PREFIXES = ("LC_", "TF_", "XLA_", "CUDA_", "NVIDIA_", "OMP_", "KMP_", "MKL_", "OPENBLAS_",
                                 "KERAS_", "CATDOG_", "GOOGLE_", "CLOUDSDK_", "GCE_")


def read_tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    """The last `limit` bytes of a log, ANSI colours removed ('' when there is none yet)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - limit))
            return _ANSI.sub("", f.read().decode("utf-8", "replace"))
    except FileNotFoundError:
        return ""


def last_error_line(text: str) -> str | None:
    """The last `error: ...` line pipelines.run printed, else the last exception line of the text."""
    lines = [ln.strip() for ln in text.splitlines()]
    own = [ln for ln in lines if ln.startswith("error: ")]
    errors = own or [ln for ln in lines if _ERROR_LINE.match(ln)]
    return errors[-1].removeprefix("error: ")[:500] if errors else None


def failure_reason(text: str, exit_code: int | None) -> str:
    """Why a local run whose process ended without a recorded error failed: its log's last error line."""
    line = last_error_line(text)
    if line:
        return line
    return "the pipeline process ended without a result" + (f"; exit code {exit_code}" if exit_code is not None else "")


def pipeline_environment(environ: dict[str, str]) -> dict[str, str]:
    """The variables of `environ` the pipeline process may see (module docstring)."""
    return {k: v for k, v in environ.items() if k in PIPELINE_ENVIRONMENT or k.startswith(PIPELINE_ENVIRONMENT_PREFIXES)}


def step_detail(last: dict | None) -> str | None:
    """`frozen epoch 3/10`, `features 1200/3556`, `export` from a step's latest phase or epoch event."""
    if not last:
        return None
    if last.get("event") == "epoch":
        return f"{last['phase']} epoch {last['epoch']}/{last['epochs']}"
    if "total" in last:
        return f"{last['phase']} {last['done']}/{last['total']}"
    return last.get("phase")



class LocalLauncher:
    def __init__(self, runs_dir: Path, target: TrainingTarget):
        self.runs_dir = Path(runs_dir)
        self.target = target  # the local target: its registry holds the runs' decisions
        self._children: dict[int, subprocess.Popen] = {}  # started by this process: reaped here
        self._lock = threading.Lock()

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def progress_file(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "progress.jsonl"

    def command(self, run_id: str, target: TrainingTarget, config: PipelineConfig) -> list[str]:
        words = [f"{key}={value}" for key, value in run_config(run_id, config).pipeline_arguments().items()]
        return [sys.executable, "-m", "pipelines.run", "TARGET=local", f"OUTPUT_ROOT={output_root(target)}",
                f"PROGRESS_FILE={self.progress_file(run_id)}", "VERBOSE=1", *words]

    def start(self, run_id: str, target: TrainingTarget, config: PipelineConfig) -> RunHandle:
        folder = self.run_dir(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / "log.txt"
        env = {**pipeline_environment(dict(os.environ)), "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
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
        progress = read_progress(self.progress_file(run.id))
        step, done = progress.step, progress.steps_done
        if progress.state == "succeeded":  # its end event: the decision is in the registry by now
            return decision_observation(self.target.registry_uri, run.id, done)
        if self._alive(run):
            return Observation("running", step, done, eta_s=progress.eta_s, detail=step_detail(progress.last))
        if run.cancel_requested:
            return Observation("cancelled", step, done, "stopped on request")
        reason = progress.error or failure_reason(read_tail(Path(run.log_uri)) if run.log_uri else "",
                                                  self._exit_code(run.pid) if run.pid else None)
        return Observation("failed", step, done, reason)

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
