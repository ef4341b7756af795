"""Retraining runs: the database lock, the recorded validations, states, Stop, restart, automatic runs.

A FakeLauncher stands in for the pipeline where the run service is under test; the LocalLauncher is
tested on real child processes (a short script in place of `python -m pipelines.run`, so each test
takes a second, not minutes). tests/feedback/retraining/test_retrain_e2e.py runs the real pipeline.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from feedback.store.tables import RunValidation, TrainingRun, Validation
from feedback.retraining.config import parse_training_words
from feedback.retraining.launchers.base import Observation, RunHandle
from feedback.retraining.launchers.local import LocalLauncher, failure_reason
from tests.feedback_fixtures import (  # noqa: F401 (fixtures)
    DATABASES,
    FakePredictor,
    database_url,
    photo,
    started_service,
)
from tests.helpers import REPO_ROOT


class FakeLauncher:
    """start/observe/cancel as feedback/retraining/launchers/base.py defines them; states set by the test."""

    def __init__(self):
        self.started: list[tuple[str, dict]] = []
        self.states: dict[str, Observation] = {}
        self.cancelled: list[str] = []
        self.fail_start: Exception | None = None

    def start(self, run_id, target, config):
        if self.fail_start:
            raise self.fail_start
        self.started.append((run_id, config.pipeline_arguments()))
        return RunHandle(remote_id=f"fake-{run_id}", console_url=f"http://console/{run_id}")

    def owns(self, run) -> bool:
        return True

    def observe(self, run):
        return self.states.get(run.id, Observation("running", "train", 2))

    def cancel(self, run):
        self.cancelled.append(run.id)
        self.states[run.id] = Observation("cancelled", reason="stopped on request")


def succeed(launcher: FakeLauncher, run_id: str, promoted: bool = True, version: int = 2) -> None:
    decision = {"promoted": promoted, "challenger_version": version, "champion_version": version if promoted else 1,
                "reason": "challenger wins" if promoted else "champion kept"}
    launcher.states[run_id] = Observation("succeeded", None, 6, decision["reason"], decision)


@pytest.fixture
def training(tmp_path, image_folder):
    return parse_training_words([f"DATA={image_folder}", f"REGISTRY={tmp_path / 'registry'}", "frozen_epochs=1"],
                                str(tmp_path / "store"))


def service_with(tmp_path, url, training, launcher, **changes):
    return started_service(tmp_path, url, training=training, launchers={"local": launcher}, **changes)


def validate_photos(service, n: int, start: int = 0, label: str = "cat") -> None:
    for i in range(start, start + n):
        prediction = service.predict(photo(1000 + i))
        service.validate(prediction.id, label)


def test_a_run_records_its_parameters_and_the_validations_it_took_in(tmp_path, training):
    launcher = FakeLauncher()
    service = service_with(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", training, launcher)
    try:
        validate_photos(service, 3)
        first = service.predict(photo(1000))  # the same photo again, corrected: only its latest verdict counts
        service.validate(first.id, "dog")
        run = service.runs.start_run(parameters={"finetune_epochs": 0})
        assert run.state == "running" and run.trigger == "manual" and run.target == "local"
        assert run.remote_id == f"fake-{run.id}" and run.started_at is not None
        (run_id, arguments), = launcher.started
        assert run_id == run.id
        assert arguments["finetune_epochs"] == 0 and arguments["frozen_epochs"] == 1  # request, then app words
        assert arguments["feedback_uri"] == str(tmp_path / "store")
        with service.db.read() as session:
            taken = set(session.scalars(select(RunValidation.validation_id).where(RunValidation.run_id == run.id)))
            latest = {v.photo_sha256: v.id for v in session.scalars(select(Validation).order_by(Validation.id))}
        assert taken == set(latest.values()) and len(taken) == 3
        assert run.validated_photos == 3 and run.new_validated_photos == 3
        assert run.validation_cutoff_id == max(latest.values())
    finally:
        service.close()


@pytest.mark.parametrize("database_url", DATABASES, indirect=True)
def test_two_replicas_asked_at_once_start_one_run(tmp_path, training, database_url):  # noqa: F811
    """16 requests over two app processes' services on one database: one run, 15 conflicts naming it."""
    launchers = [FakeLauncher(), FakeLauncher()]
    services = [service_with(tmp_path / str(i), database_url, training, launchers[i]) for i in range(2)]
    barrier = threading.Barrier(16)

    def ask(i: int):
        barrier.wait()
        try:
            return services[i % 2].runs.start_run()
        except Exception as exc:  # RunConflict expected
            return exc

    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(ask, range(16)))
        runs = [r for r in results if isinstance(r, TrainingRun)]
        conflicts = [r for r in results if not isinstance(r, TrainingRun)]
        assert len(runs) == 1, results
        assert {type(c).__name__ for c in conflicts} == {"RunConflict"}
        assert {c.run_id for c in conflicts} == {runs[0].id}
        assert sum(len(launcher.started) for launcher in launchers) == 1
        with services[0].db.read() as session:
            assert session.scalars(select(TrainingRun.id)).all() == [runs[0].id]
    finally:
        for service in services:
            service.close()


def test_the_lock_is_released_when_the_run_ends_and_survives_a_restart(tmp_path, training):
    url = f"sqlite:///{tmp_path}/db.sqlite"
    launcher = FakeLauncher()
    service = service_with(tmp_path, url, training, launcher)
    run = service.runs.start_run()
    service.close()
    # a new app process: the run is still active, so a second one is refused
    restarted = service_with(tmp_path, url, training, launcher)
    try:
        with pytest.raises(Exception, match=f"already active: {run.id}"):
            restarted.runs.start_run()
        succeed(launcher, run.id, promoted=True, version=2)
        restarted.runs.refresh()
        done = restarted.runs.get(run.id)
        assert (done.state, done.promoted, done.version, done.champion_version) == ("succeeded", True, 2, 2)
        assert done.active is None and done.finished_at is not None and done.reason == "challenger wins"
        assert restarted.runs.start_run().id != run.id  # the lock is free again
    finally:
        restarted.close()


def test_a_launch_that_fails_is_recorded_and_frees_the_lock(tmp_path, training):
    from feedback.retraining.launchers.base import LaunchError

    launcher = FakeLauncher()
    launcher.fail_start = LaunchError("no such command")
    service = service_with(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", training, launcher)
    try:
        with pytest.raises(LaunchError, match="no such command"):
            service.runs.start_run()
        with service.db.read() as session:
            (run,) = session.scalars(select(TrainingRun)).all()
        assert run.state == "failed" and run.active is None and "no such command" in run.reason
        launcher.fail_start = None
        assert service.runs.start_run().state == "running"
    finally:
        service.close()


def test_a_queued_run_left_by_a_crash_is_failed_after_a_while(tmp_path, training, monkeypatch):
    from feedback.retraining import runs as runs_module

    launcher = FakeLauncher()
    service = service_with(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", training, launcher)
    try:
        with service.db.writing() as session:  # what a crash between the insert and the launch leaves
            session.add(TrainingRun(id="crashed", target="local", trigger="manual", state="queued", active=1,
                                    parameters={}, validation_cutoff_id=0, validated_photos=0,
                                    new_validated_photos=0, cancel_requested=False, steps_done=0))
        service.runs.refresh()
        assert service.runs.get("crashed").state == "queued"  # young: perhaps starting right now
        monkeypatch.setattr(runs_module, "QUEUED_TIMEOUT_S", -1)
        service.runs.refresh()
        crashed = service.runs.get("crashed")
        assert crashed.state == "failed" and crashed.active is None and "before the run was started" in crashed.reason
    finally:
        service.close()


def test_cancel_records_cancelled_and_a_finished_run_cannot_be_cancelled(tmp_path, training):
    from feedback.retraining.runs import RunFinished, RunNotFound

    launcher = FakeLauncher()
    service = service_with(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", training, launcher)
    try:
        run = service.runs.start_run()
        cancelled = service.runs.cancel_run(run.id)
        assert launcher.cancelled == [run.id]
        assert cancelled.state == "cancelled" and cancelled.cancel_requested and cancelled.active is None
        with pytest.raises(RunFinished):
            service.runs.cancel_run(run.id)
        with pytest.raises(RunNotFound):
            service.runs.cancel_run("nope")
    finally:
        service.close()


def test_automatic_retraining_waits_for_enough_new_verdicts(tmp_path, training):
    launcher = FakeLauncher()
    service = service_with(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", training, launcher, retrain_min_new=3)
    try:
        validate_photos(service, 2)
        assert service.runs.retrain_if_needed() is None and service.runs.new_validated_photos() == 2
        validate_photos(service, 1, start=2)
        run = service.runs.retrain_if_needed()
        assert run is not None and run.trigger == "automatic" and run.new_validated_photos == 3
        assert service.runs.retrain_if_needed() is None  # one at a time
        succeed(launcher, run.id, promoted=False)
        service.runs.refresh()
        # the challenger lost on these verdicts: no new run until 3 more photos are validated
        assert service.runs.new_validated_photos() == 0 and service.runs.retrain_if_needed() is None
        validate_photos(service, 3, start=3)
        second = service.runs.retrain_if_needed()
        assert second is not None and second.new_validated_photos == 3 and second.validated_photos == 6
    finally:
        service.close()


def test_automatic_retraining_can_be_turned_off(tmp_path, training):
    launcher = FakeLauncher()
    service = service_with(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", training, launcher, retrain_min_new=0)
    try:
        validate_photos(service, 2)
        assert service.runs.retrain_if_needed() is None and launcher.started == []
    finally:
        service.close()


def test_the_watcher_starts_an_automatic_run_by_itself(tmp_path, training):
    launcher = FakeLauncher()
    service = service_with(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", training, launcher, retrain_min_new=1,
                           retrain_check_interval_s=0.05, run_poll_interval_s=0.05)
    try:
        validate_photos(service, 1)
        service.runs.start(background=True)
        deadline = time.monotonic() + 10
        while not launcher.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(launcher.started) == 1
    finally:
        service.close()


# --- requests: the run's parameters, the target ------------------------------------------------

def test_request_parameters_are_checked_and_paths_refused(tmp_path, training):
    from pipelines.config import ConfigError

    launcher = FakeLauncher()
    service = service_with(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", training, launcher)
    try:
        with pytest.raises(ConfigError, match="frozen_epochs"):
            service.runs.start_run(parameters={"frozen_epochs": -1})
        with pytest.raises(ConfigError, match="no_such_key"):
            service.runs.start_run(parameters={"no_such_key": 1})
        with pytest.raises(ConfigError, match="data_uri.*set by the app"):
            service.runs.start_run(parameters={"data_uri": "/etc"})
        with pytest.raises(ConfigError, match="'vertex' is not configured"):
            service.runs.start_run(target="vertex")
        with service.db.read() as session:
            assert session.scalars(select(TrainingRun)).all() == []  # nothing recorded
    finally:
        service.close()


def test_local_data_that_does_not_exist_is_a_clear_error(tmp_path):
    from pipelines.config import ConfigError

    training = parse_training_words([f"DATA={tmp_path / 'missing'}"], str(tmp_path / "store"))
    with pytest.raises(ConfigError, match="missing does not exist"):
        training.run_config(training.default, {})


def test_several_targets_with_their_own_settings(tmp_path):
    from tests.remote_fixtures import IMAGE

    training = parse_training_words(
        ["TARGET=local,vertex", f"DATA={tmp_path}", "REGISTRY=registry", "frozen_epochs=2",
         "VERTEX_DATA=gs://b/data", "VERTEX_REGISTRY=gs://b/registry", "VERTEX_WEIGHTS=gs://b/w.h5",
         "PROJECT=p", "REGION=europe-west4", "PIPELINE_ROOT=gs://b/root", f"IMAGE={IMAGE}"],
        "gs://b/feedback")
    assert list(training.targets) == ["local", "vertex"] and training.default.name == "local"
    local, vertex = training.targets["local"], training.targets["vertex"]
    assert local.base.data_uri == str(tmp_path) and local.base.frozen_epochs == 2
    assert (vertex.base.data_uri, vertex.base.registry_uri, vertex.base.frozen_epochs) == ("gs://b/data", "gs://b/registry", 2)
    assert vertex.base.vertex_project == "p" and vertex.remote.region == "europe-west4"
    assert vertex.base.feedback_uri == local.base.feedback_uri == "gs://b/feedback"


@pytest.mark.parametrize("words, message", [
    (["TARGET=laptop"], "distinct targets among local, vertex, kubeflow"),
    (["TARGET=local", "NO_SUCH=1"], "unknown setting NO_SUCH"),
    (["image_size=7"], "image_size"),
    (["TARGET=kubeflow", "KFP_HOST=http://127.0.0.1:1", "DATA=gs://b/d", "REGISTRY=gs://b/r"], "IMAGE is not set"),
])
def test_bad_training_words_fail_at_start_up(words, message, tmp_path):
    from pipelines.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        parse_training_words(words, "gs://b/feedback")


def test_a_remote_target_needs_the_feedback_photos_on_gcs(tmp_path):
    from pipelines.config import ConfigError
    from tests.remote_fixtures import IMAGE

    with pytest.raises(ConfigError, match="FEEDBACK_URI, which must then be a gs:// prefix"):
        parse_training_words(["TARGET=kubeflow", "KFP_HOST=http://127.0.0.1:1", f"IMAGE={IMAGE}", "DATA=gs://b/d",
                              "REGISTRY=gs://b/r"], str(tmp_path / "store"))


def test_progress_only_moves_forward(tmp_path, training):
    """A launcher that reports fewer steps done than before (a lagging task list) changes nothing;
    a failed run keeps the step it failed in and never shows fewer steps done than it had."""
    launcher = FakeLauncher()
    service = service_with(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", training, launcher)
    try:
        run = service.runs.start_run()
        seen = []
        for observation in [Observation("running", "train", 2), Observation("running", "preprocess", 1),
                            Observation("running", None, 0), Observation("running", "evaluate", 3)]:
            launcher.states[run.id] = observation
            service.runs.refresh()
            current = service.runs.get(run.id)
            seen.append((current.step, current.steps_done))
        assert seen == [("train", 2), ("train", 2), ("train", 2), ("evaluate", 3)]
        launcher.states[run.id] = Observation("failed", None, 1, "step evaluate failed: boom")
        service.runs.refresh()
        done = service.runs.get(run.id)
        assert (done.state, done.step, done.steps_done, done.reason) == ("failed", "evaluate", 3,
                                                                          "step evaluate failed: boom")
    finally:
        service.close()


def test_the_service_and_the_pipeline_name_the_same_steps():
    from feedback.retraining.runs import PIPELINE_STEPS
    from pipelines.training_pipeline import STEPS

    assert PIPELINE_STEPS == STEPS


# --- the local launcher, on real processes ---------------------------------------------------------

# each script stands in for `python -m pipelines.run`: argv[1] is its registry, argv[2] its PROGRESS_FILE,
# argv[3] its run id (the app's, passed as run_id)
_EVENTS = """
import json, os, pathlib, sys, time
def emit(event, **fields):
    with open(sys.argv[2], "a") as f:
        f.write(json.dumps({"t": time.time(), "event": event, **fields}) + "\\n")
emit("run", steps=["ingest", "preprocess", "train", "evaluate", "select-champion", "deploy"])
"""
SCRIPTS = {
    "succeed": _EVENTS + """
for step in ["ingest", "preprocess", "train", "evaluate", "select-champion"]:
    emit("step", step=step, status="started")
    print("Executing task ... lines that scroll out of any tail", flush=True)
    emit("step", step=step, status="succeeded", seconds=0.1)
from catdog.registry import ModelRegistry
ModelRegistry(sys.argv[1]).record_decision({"run_id": "another-run", "promoted": True, "challenger_version": 9,
                                            "champion_version": 9, "reason": "another run's decision"})
ModelRegistry(sys.argv[1]).record_decision({"run_id": sys.argv[3], "promoted": False, "challenger_version": 3,
                                            "champion_version": 2, "reason": "v3 does not beat the champion"})
emit("end", status="succeeded")
""",
    # select-champion ran, but no decision of this run is in the registry (e.g. it recorded it elsewhere)
    "no-decision": _EVENTS + """
emit("step", step="select-champion", status="started")
emit("step", step="select-champion", status="succeeded", seconds=0.1)
emit("end", status="succeeded")
""",
    "sleep": _EVENTS + """
emit("step", step="ingest", status="started")
emit("step", step="ingest", status="succeeded", seconds=0.1)
emit("step", step="preprocess", status="started")
emit("step", step="preprocess", status="succeeded", seconds=0.1)
emit("step", step="train", status="started")
emit("epoch", step="train", phase="frozen", epoch=3, epochs=10, seconds=1.0, eta_s=7.0)
print("x" * 20000, flush=True)  # an executor-input dump: whatever the log holds, progress is not read from it
time.sleep(120)
""",
    "fail": _EVENTS + """
emit("step", step="ingest", status="started")
emit("step", step="ingest", status="succeeded", seconds=0.1)
emit("step", step="train", status="started")
print("ValueError: no photo in class folder 'dog'", flush=True)
emit("step", step="train", status="failed", seconds=0.1, error="ValueError: no photo in class folder 'dog'")
print("error: step train failed: ValueError: no photo in class folder 'dog'", file=sys.stderr, flush=True)
emit("end", status="failed", error="step train failed: ValueError: no photo in class folder 'dog'")
sys.exit(1)
""",
    # what pipelines.run does with a bad DATA: one error line and its end event, exit code 2
    "refuse": _EVENTS + """
print("error: DATA=/nowhere does not exist: give a folder with one sub-folder per class", file=sys.stderr, flush=True)
emit("end", status="failed", error="DATA=/nowhere does not exist: give a folder with one sub-folder per class")
sys.exit(2)
""",
    # a process that dies without writing its end: the reason is its last error line
    "crash": """
import sys
print("error: something only the log says", file=sys.stderr, flush=True)
sys.exit(3)
""",
    "environment": """
import json, os, sys
print(json.dumps(dict(os.environ)), flush=True)
""",
}


class ScriptLauncher(LocalLauncher):
    """The real LocalLauncher with a short script as the pipeline process."""

    behaviour = "succeed"

    def command(self, run_id, target, config):
        return [sys.executable, "-c", SCRIPTS[self.behaviour], config.registry_uri, str(self.progress_file(run_id)),
                run_id]


def wait_for(service, run_id: str, states: tuple[str, ...], timeout_s: float = 30) -> TrainingRun:
    deadline = time.monotonic() + timeout_s
    while True:
        service.runs.refresh()
        run = service.runs.get(run_id)
        if run.state in states or time.monotonic() > deadline:
            return run
        time.sleep(0.1)


def test_a_local_run_succeeds_with_its_decision(tmp_path, training):
    launcher = ScriptLauncher(tmp_path / "runs", training.default)
    service = service_with(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", training, launcher)
    try:
        run = service.runs.start_run()
        assert run.pid and run.log_uri == str(tmp_path / "runs" / run.id / "log.txt")
        done = wait_for(service, run.id, ("succeeded", "failed"))
        assert (done.state, done.promoted, done.version, done.champion_version) == ("succeeded", False, 3, 2)
        # all the steps that ran: 5 of 5, deploy runs only on a promotion (was "1/5 steps" from the log's tail)
        assert (done.steps_done, done.step, done.reason) == (5, None, "v3 does not beat the champion")
        assert "Executing task" in service.runs.log_tail(done)
    finally:
        service.close()


def test_a_local_run_that_succeeded_without_a_decision_says_so(tmp_path, training):
    launcher = ScriptLauncher(tmp_path / "runs", training.default)
    launcher.behaviour = "no-decision"
    service = service_with(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", training, launcher)
    try:
        run = service.runs.start_run()
        done = wait_for(service, run.id, ("succeeded", "failed"))
        assert (done.state, done.promoted, done.version, done.steps_done) == ("succeeded", None, None, 1)
        assert done.reason == (f"the run finished but recorded no champion decision for run {run.id} in "
                               f"{training.default.registry_uri}")
    finally:
        service.close()


@pytest.mark.parametrize("behaviour, step, reason", [
    ("fail", "train", "step train failed: ValueError: no photo in class folder 'dog'"),
    # "Retrain now" with a bad DATA said "the pipeline process ended without a result; exit code 2"
    ("refuse", None, "DATA=/nowhere does not exist: give a folder with one sub-folder per class"),
    ("crash", None, "something only the log says"),
])
def test_a_failed_local_run_says_which_step_and_why(tmp_path, training, behaviour, step, reason):
    launcher = ScriptLauncher(tmp_path / "runs", training.default)
    launcher.behaviour = behaviour
    service = service_with(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", training, launcher)
    try:
        run = service.runs.start_run()
        done = wait_for(service, run.id, ("succeeded", "failed"))
        assert done.state == "failed" and done.active is None
        assert (done.step, done.reason) == (step, reason)  # the step it failed in stays shown
        assert done.steps_done == (1 if behaviour == "fail" else 0)
    finally:
        service.close()


def test_the_pipeline_process_gets_no_secret_of_the_app(tmp_path, training, monkeypatch):
    for name, value in {"DATABASE_URL": "postgresql://u:pw@db/x", "APP_TOKEN": "s3cret", "PREDICTOR_URL": "http://p",
                        "SOME_OTHER_SECRET": "x", "KERAS_HOME": str(tmp_path / "keras"), "LC_ALL": "C.UTF-8"}.items():
        monkeypatch.setenv(name, value)
    launcher = ScriptLauncher(tmp_path / "runs", training.default)
    launcher.behaviour = "environment"
    service = service_with(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", training, launcher)
    try:
        run = service.runs.start_run()
        wait_for(service, run.id, ("failed",))
        seen = json.loads((tmp_path / "runs" / run.id / "log.txt").read_text())
    finally:
        service.close()
    assert not {"DATABASE_URL", "APP_TOKEN", "PREDICTOR_URL", "SOME_OTHER_SECRET"} & set(seen)
    assert {k: seen.get(k) for k in ("KERAS_HOME", "LC_ALL", "PATH", "PYTHONUNBUFFERED")} == {
        "KERAS_HOME": str(tmp_path / "keras"), "LC_ALL": "C.UTF-8", "PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1"}
    assert seen["PYTHONPATH"].split(os.pathsep)[0] == str(REPO_ROOT)


def test_the_local_launcher_asks_for_progress_events_and_the_full_log(tmp_path, training):
    command = LocalLauncher(tmp_path / "runs", training.default).command("r1", training.default, training.default.base)
    assert f"PROGRESS_FILE={tmp_path / 'runs' / 'r1' / 'progress.jsonl'}" in command and "VERBOSE=1" in command
    assert "run_id=r1" in command and not any(word.startswith("RESULT_FILE=") for word in command)


def process_ended(pid: int) -> bool:
    """Gone or a zombie. Both "apps" of a test share one OS process, the first one's parent, so
    either may reap it (psutil's wait reaps its own children); reading its state races with that."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_stop_ends_the_local_process_group_and_a_restart_reconciles(tmp_path, training):
    url = f"sqlite:///{tmp_path}/db.sqlite"
    launcher = ScriptLauncher(tmp_path / "runs", training.default)
    launcher.behaviour = "sleep"
    service = service_with(tmp_path, url, training, launcher)
    run = service.runs.start_run()
    deadline = time.monotonic() + 20
    while service.runs.get(run.id).step != "train" and time.monotonic() < deadline:
        service.runs.refresh()
        time.sleep(0.1)
    running = service.runs.get(run.id)
    assert (running.state, running.step, running.steps_done) == ("running", "train", 2)
    service.close()

    # the app restarts (a new launcher: it did not start the process) and the run is still watched
    restarted = service_with(tmp_path, url, training, ScriptLauncher(tmp_path / "runs", training.default))
    try:
        assert restarted.runs.get(run.id).state == "running"
        restarted.runs.cancel_run(run.id)
        done = wait_for(restarted, run.id, ("cancelled", "failed"))
        assert done.state == "cancelled" and done.active is None
        assert process_ended(run.pid)
    finally:
        restarted.close()


def run_whose_process_died_while_no_app_watched(tmp_path, url, training) -> TrainingRun:
    """A local run started by an app that then stopped, its process killed (e.g. by the OOM killer)."""
    import os
    import signal

    launcher = ScriptLauncher(tmp_path / "runs", training.default)
    launcher.behaviour = "sleep"
    service = service_with(tmp_path, url, training, launcher)
    run = service.runs.start_run()
    service.close()
    os.killpg(run.pid, signal.SIGKILL)
    launcher._children[run.pid].wait()
    return run


def test_a_process_that_died_while_no_app_watched_is_failed_on_restart(tmp_path, training):
    url = f"sqlite:///{tmp_path}/db.sqlite"
    run = run_whose_process_died_while_no_app_watched(tmp_path, url, training)
    restarted = service_with(tmp_path, url, training, ScriptLauncher(tmp_path / "runs", training.default))
    try:
        done = restarted.runs.get(run.id)  # start() reconciled it
        assert done.state == "failed" and done.active is None
        assert done.reason.startswith("the pipeline process ended without a result")
    finally:
        restarted.close()


def test_a_local_run_of_another_host_is_left_to_that_host(tmp_path, training, monkeypatch):
    """A replica on another machine cannot see the process: it must not fail the run for that."""
    url = f"sqlite:///{tmp_path}/db.sqlite"
    run = run_whose_process_died_while_no_app_watched(tmp_path, url, training)
    monkeypatch.setattr("feedback.retraining.launchers.local.socket.gethostname", lambda: "another-host")
    elsewhere = service_with(tmp_path, url, training, ScriptLauncher(tmp_path / "runs", training.default))
    try:
        elsewhere.runs.refresh()
        assert elsewhere.runs.get(run.id).state == "running"  # on its own host it would be failed now
    finally:
        elsewhere.close()


@pytest.mark.parametrize("text, expected", [
    ("Traceback ...\nMemoryError\n", "MemoryError"),
    ("error: DATA=x does not exist\nTraceback ...\nKeyboardInterrupt\n", "DATA=x does not exist"),
    ("nothing to see\n", "the pipeline process ended without a result; exit code -9"),
])
def test_failure_reason_is_the_last_error_line(text, expected):
    assert failure_reason(text, -9) == expected


def test_neither_verdicts_are_no_training_photos_for_a_run_or_the_trigger(tmp_path, training):
    """A photo whose latest verdict is neither is in no class folder: no run takes it in, and it does
    not count toward RETRAIN_MIN_NEW; a photo called neither after a class verdict leaves the run."""
    launcher = FakeLauncher()
    service = service_with(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", training, launcher, retrain_min_new=3)
    try:
        validate_photos(service, 2)
        validate_photos(service, 3, start=2, label="neither")
        assert service.runs.new_validated_photos() == 2 and service.runs.retrain_if_needed() is None
        changed = service.predict(photo(1000))  # the first cat photo again: now judged neither
        service.validate(changed.id, "neither")
        run = service.runs.start_run(parameters={})
        assert run.validated_photos == 1
        with service.db.read() as session:
            taken = list(session.scalars(select(Validation.label).join(
                RunValidation, RunValidation.validation_id == Validation.id).where(RunValidation.run_id == run.id)))
        assert taken == ["cat"]
    finally:
        service.close()
