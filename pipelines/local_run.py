"""A local run's progress, terminal and links (TARGET=local: pipelines/local.py).

- Step events: `step_events(writer)` wraps kfp.local's one entry point for running a task
  (kfp.local.orchestrator.task_executor.execute_single_task, kfp 2.17: called by both of its DAG
  orchestrators, for every runner, cache hits included) and appends "step" started / succeeded /
  failed events to the progress file (catdog/progress.py); a failed step's event carries the last
  error line its process printed. The code inside a step appends its own events through
  $CATDOG_PROGRESS (the train step's phases and epochs); under the DockerRunner,
  pipelines/container_run.py passes that variable and mounts the file's folder.
- The terminal: `Console` follows the progress file and prints one line per step with its time,
  the train step's phases and epochs; everything else (kfp.local's executor inputs, the steps' own
  output, warnings) goes to the full log (`verbose_output`), or to the terminal with VERBOSE=1.
- Links: `browsable(run_dir)` puts an `.html` (HTML) or `.md` (Markdown) symlink beside each such
  artifact, which kfp.local writes without an extension, so a browser renders it.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from catdog.progress import ProgressWriter, RunProgress, duration, epoch_line, read_events

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# the last line of a Python traceback (`ValueError: ...`, `catdog.sources.IngestError: ...`) or our `error: ...`
_ERROR_LINE = re.compile(r"^(error: .+|([A-Za-z_][\w]*\.)*[A-Za-z_]\w*(Error|Exception|Exit|Interrupt)(: .+)?)$")
LINK_SUFFIXES = {"system.HTML": ".html", "system.Markdown": ".md"}


KNOWN_WARNINGS = (
    ("You may be attemping to run a task", RuntimeWarning),  # every step: the image's code runs in this environment
    (r"Task .* have no effect in the current local runner", UserWarning),  # train's limits, display names
)


def quiet_known_warnings() -> None:
    """kfp.local's warnings for what this project does on purpose: it runs the components' image code
    in this Python environment (SubprocessRunner), and the train step's CPU/memory limits and display
    names apply on a cluster only. Said once in the log here instead of once per step. ("once" filters
    do not hold: something in the run resets the warning registries between steps.)"""
    for message, category in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    print("note: kfp.local's warnings that the steps run the components' image code in this Python environment "
          "and that cluster settings (CPU/memory limits, display names) have no effect here are expected and not "
          "repeated", flush=True)


class ErrorLines:
    """Remembers the error lines of the text written through it (a step's output, as kfp.local relays it)."""

    def __init__(self):
        self._partial = ""
        self.lines: list[str] = []

    def feed(self, text: str) -> None:
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        for line in complete:
            line = _ANSI.sub("", line).strip()
            if _ERROR_LINE.match(line):
                self.lines.append(line[:500])

    def last_since(self, mark: int) -> str | None:
        return self.lines[-1] if len(self.lines) > mark else None


class _Tee(io.TextIOBase):
    def __init__(self, target: TextIO, errors: ErrorLines):
        self.target, self.error_lines = target, errors

    def write(self, text: str) -> int:
        self.target.write(text)
        self.error_lines.feed(text)
        return len(text)

    def flush(self) -> None:
        self.target.flush()


@contextlib.contextmanager
def verbose_output(log_path: Path | None, errors: ErrorLines) -> Iterator[None]:
    """sys.stdout and sys.stderr into the log file (None: left on the terminal), through `errors`.

    kfp.local prints the steps' output and logs through sys.stdout (it reads it when it runs them), so
    swapping the Python streams moves all of it; this process itself writes nothing at the C level.
    """
    saved = sys.stdout, sys.stderr
    with contextlib.ExitStack() as stack:
        target = stack.enter_context(open(log_path, "a", encoding="utf-8", buffering=1)) if log_path else saved[0]
        sys.stdout = sys.stderr = _Tee(target, errors)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved


@contextlib.contextmanager
def step_events(writer: ProgressWriter, errors: ErrorLines) -> Iterator[None]:
    """Step events around every task kfp.local runs (see the module docstring)."""
    from kfp.local import status
    from kfp.local.orchestrator import task_executor

    original = task_executor.execute_single_task

    def execute_single_task(*args, **kwargs):
        name = kwargs.get("task_name") or args[0]
        mark, started = len(errors.lines), time.monotonic()
        writer.emit("step", step=name, status="started")
        try:
            outputs, task_status = original(*args, **kwargs)
        except BaseException as exc:
            writer.emit("step", step=name, status="failed", seconds=round(time.monotonic() - started, 1),
                        error=f"{type(exc).__name__}: {exc}"[:500])
            raise
        succeeded = task_status == status.Status.SUCCESS
        writer.emit("step", step=name, status="succeeded" if succeeded else "failed",
                    seconds=round(time.monotonic() - started, 1),
                    **({} if succeeded else {"error": errors.last_since(mark) or "its process failed; see the log"}))
        return outputs, task_status

    task_executor.execute_single_task = execute_single_task
    try:
        yield
    finally:
        task_executor.execute_single_task = original


class Console:
    """Follows a progress file and prints it to `out` as short lines (a thread; `close` prints the rest).

    `open_lines`: a step's line is left open ("[1/6] ingest ...") and ends with its time when nothing
    was printed in between; off where other output is interleaved (VERBOSE=1).
    """

    PHASE_EVERY_S = 15

    def __init__(self, path: Path, out: TextIO, open_lines: bool = True, poll_s: float = 0.3):
        self.path, self.out, self.open_lines, self.poll_s = path, out, open_lines, poll_s
        self.progress = RunProgress()
        self._seen = 0
        self._open: str | None = None  # the step whose line is open
        self._numbers: dict[str, int] = {}  # each step's place in the order the steps started
        self._phase_printed = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="progress-console", daemon=True)

    def start(self) -> Console:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._render_new()
        self._end_line()

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._render_new()

    def _render_new(self) -> None:
        events = read_events(self.path)
        for event in events[self._seen:]:
            self.progress.apply(event)
            self._render(event)
        self._seen = len(events)

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def _end_line(self) -> None:
        if self._open is not None:
            self._write("\n")
            self._open = None

    def _line(self, text: str) -> None:
        self._end_line()
        self._write(text + "\n")

    def _label(self, step: str) -> str:
        """[n/total] step, n counting the steps in the order they started: steps that need only the
        same ones (evaluate and label-issues, both after train) run in either order, and a count
        taken from the pipeline's list would then go backwards."""
        steps = self.progress.steps
        if step not in steps:
            return step
        number = self._numbers.setdefault(step, len(self._numbers) + 1)
        return f"[{number}/{len(steps)}] {step}"

    def _render(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "step":
            self._render_step(event)
        elif kind == "phase":
            self._render_phase(event)
        elif kind == "epoch":
            values = {k: event[k] for k in ("accuracy", "val_accuracy") if k in event}
            self._line("      " + epoch_line(event["phase"], event["epoch"], event["epochs"], event["seconds"],
                                             event.get("eta_s"), values))

    def _render_step(self, event: dict) -> None:
        label, status = self._label(event["step"]), event["status"]
        if status == "started":
            if self.open_lines:
                self._end_line()
                self._write(f"{label} ...")
                self._open = event["step"]
            else:
                self._line(f"{label} ...")
        elif status == "succeeded":
            if self._open == event["step"]:
                self._write(f" {duration(event['seconds'])}\n")
                self._open = None
            else:
                self._line(f"{label}: {duration(event['seconds'])}")
        else:
            self._line(f"{label} failed after {duration(event['seconds'])}: {event.get('error')}")

    def _render_phase(self, event: dict) -> None:
        phase, now = event["phase"], time.monotonic()
        if phase != "features":
            self._line(f"      {phase} ...")
            return
        done, total = event["done"], event["total"]
        if done == 0:
            self._line(f"      features: {total} photos through the frozen backbone, once (most of the frozen phase)")
            self._phase_printed = now
        elif done >= total:
            self._line(f"      features: {done}/{total} photos in {duration(event['seconds'])}")
        elif now - self._phase_printed >= self.PHASE_EVERY_S:
            self._line(f"      features: {done}/{total} photos, about {duration(event['eta_s'])} left")
            self._phase_printed = now


def artifact_types() -> dict[str, dict[str, str]]:
    """{task: {output: schema title}} of the pipeline's steps (task name = component name minus `comp-`)."""
    from pipelines.training_pipeline import training_pipeline

    return {name.removeprefix("comp-"): {k: v.artifact_type.schema_title for k, v in c.output_definitions.artifacts.items()}
            for name, c in training_pipeline.pipeline_spec.components.items()}


def browsable(run_dir: Path) -> dict[Path, Path]:
    """An .html / .md symlink beside each HTML / Markdown artifact of the run: {artifact: link}."""
    links = {}
    for task, outputs in artifact_types().items():
        for output, schema in outputs.items():
            artifact = run_dir / task / output
            if schema in LINK_SUFFIXES and artifact.is_file():
                link = artifact.with_name(artifact.name + LINK_SUFFIXES[schema])
                if not link.is_symlink():
                    link.symlink_to(artifact.name)  # relative: the run folder can move
                links[artifact] = link
    return links
