"""A local run's progress file, its terminal, its up-front checks and its failures (no pipeline run here:
tests/pipelines/test_local_pipeline.py checks the progress of a real run)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from catdog.progress import ProgressWriter, read_events, read_progress
from pipelines import local, run, words
from pipelines.config import ConfigError, build_config
from pipelines.local_run import Console, ErrorLines, step_events, verbose_output
from pipelines.local import url_problem as real_url_problem  # conftest answers for it in every test


STEPS = ["ingest", "preprocess", "train", "evaluate", "select-champion", "deploy"]


def write(path: Path, *events: dict) -> None:
    writer = ProgressWriter(path)
    for event in events:
        writer.emit(**event)


def started(step):
    return {"event": "step", "step": step, "status": "started"}


def succeeded(step, seconds=1.0):
    return {"event": "step", "step": step, "status": "succeeded", "seconds": seconds}


# --- the progress file -------------------------------------------------------------------------

def test_steps_are_counted_from_events_and_only_move_forward(tmp_path):
    path = tmp_path / "p.jsonl"
    write(path, {"event": "run", "steps": STEPS}, started("ingest"), succeeded("ingest"), started("preprocess"),
          succeeded("preprocess"), started("train"))
    seen = []
    for n in range(1, len(read_events(path)) + 1):
        (tmp_path / "part.jsonl").write_text("".join(json.dumps(e) + "\n" for e in read_events(path)[:n]))
        progress = read_progress(tmp_path / "part.jsonl")
        seen.append((progress.step, progress.steps_done))
    assert seen == [(None, 0), ("ingest", 0), (None, 1), ("preprocess", 1), (None, 2), ("train", 2)]
    assert [d for _, d in seen] == sorted(d for _, d in seen)
    with open(path, "a") as f:
        f.write('{"event": "step", "step": "train", "sta')  # a writer mid-line: left for the next read
    assert read_progress(path).step == "train"


def test_a_finished_run_shows_the_steps_that_ran_and_a_failed_one_its_step(tmp_path):
    write(tmp_path / "ok.jsonl", {"event": "run", "steps": STEPS}, *[e for s in STEPS[:5] for e in (started(s), succeeded(s))],
          {"event": "end", "status": "succeeded", "metrics": {"accuracy": 0.9}})
    ok = read_progress(tmp_path / "ok.jsonl")
    assert (ok.state, ok.steps_done, ok.steps_total, ok.step) == ("succeeded", 5, 5, None)  # not promoted: no deploy
    write(tmp_path / "bad.jsonl", {"event": "run", "steps": STEPS}, started("ingest"), succeeded("ingest"),
          started("train"), {"event": "epoch", "step": "train", "phase": "frozen", "epoch": 1, "epochs": 4,
                             "seconds": 2.0, "eta_s": 6.0})
    assert read_progress(tmp_path / "bad.jsonl").eta_s == 6.0
    write(tmp_path / "bad.jsonl", {"event": "step", "step": "train", "status": "failed", "seconds": 3.0,
                                   "error": "ValueError: boom"})
    bad = read_progress(tmp_path / "bad.jsonl")
    assert (bad.step, bad.steps_done, bad.steps_total, bad.error, bad.eta_s) == \
        ("train", 1, 6, "step train failed: ValueError: boom", None)


def test_a_writer_without_a_path_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("CATDOG_PROGRESS", raising=False)
    ProgressWriter.from_environment("train").emit("epoch", epoch=1)  # no error, no file
    monkeypatch.setenv("CATDOG_PROGRESS", str(tmp_path / "p.jsonl"))
    ProgressWriter.from_environment("train").emit("epoch", epoch=1)
    assert [(e["event"], e["step"], e["epoch"]) for e in read_events(tmp_path / "p.jsonl")] == [("epoch", "train", 1)]


# --- the terminal ------------------------------------------------------------------------------

def test_the_console_prints_one_line_a_step_and_the_train_steps_epochs(tmp_path):
    path = tmp_path / "p.jsonl"
    write(path, {"event": "run", "steps": STEPS}, started("ingest"), succeeded("ingest", 4.2), started("train"),
          {"event": "phase", "step": "train", "phase": "features", "done": 0, "total": 3556},
          {"event": "phase", "step": "train", "phase": "features", "done": 3556, "total": 3556, "seconds": 38.0,
           "eta_s": 0.0},
          {"event": "epoch", "step": "train", "phase": "frozen", "epoch": 1, "epochs": 2, "seconds": 1.4,
           "eta_s": 1.4, "accuracy": 0.93, "val_accuracy": 0.966},
          succeeded("train", 61), started("evaluate"),
          {"event": "step", "step": "evaluate", "status": "failed", "seconds": 3, "error": "OSError: disk full"})
    out = io.StringIO()
    console = Console(path, out)
    console.close()  # never started: close renders what is there
    assert out.getvalue().splitlines() == [
        "[1/6] ingest ... 4 s",
        "[2/6] train ...",  # numbered in the order the steps start (this run skips preprocess)
        "      features: 3556 photos through the frozen backbone, once (most of the frozen phase)",
        "      features: 3556/3556 photos in 38 s",
        "      frozen epoch 1/2: accuracy 0.930, val_accuracy 0.966 (1 s, at most 1 s left)",
        "[2/6] train: 1 min 01 s",
        "[3/6] evaluate ...",
        "[3/6] evaluate failed after 3 s: OSError: disk full",
    ]


def test_steps_that_may_run_in_either_order_are_numbered_as_they_start(tmp_path):
    """evaluate and label-issues both follow train: kfp.local may start either first, and the
    numbers on the screen still only go up."""
    steps = ["ingest", "preprocess", "train", "evaluate", "label-issues", "select-champion", "deploy"]
    path = tmp_path / "p.jsonl"
    events = [{"event": "run", "steps": steps}]
    for step in ("ingest", "preprocess", "train", "label-issues", "evaluate", "select-champion", "deploy"):
        events += [started(step), succeeded(step, 1)]
    write(path, *events)
    out = io.StringIO()
    Console(path, out).close()
    assert out.getvalue().splitlines() == [
        "[1/7] ingest ... 1 s", "[2/7] preprocess ... 1 s", "[3/7] train ... 1 s", "[4/7] label-issues ... 1 s",
        "[5/7] evaluate ... 1 s", "[6/7] select-champion ... 1 s", "[7/7] deploy ... 1 s"]


def test_a_failed_step_names_the_last_error_line_its_process_printed(tmp_path, monkeypatch):
    """kfp.local relays a step's output through sys.stdout; the step's event gets its last error line."""
    from kfp.local import status
    from kfp.local.orchestrator import task_executor

    def failing_task(**kwargs):
        print("    Traceback (most recent call last):\n      ...\n    ValueError: no photo in class folder 'dog'")
        print("    some line after it")
        return {}, status.Status.FAILURE

    monkeypatch.setattr(task_executor, "execute_single_task", failing_task)
    errors, path = ErrorLines(), tmp_path / "p.jsonl"
    with verbose_output(tmp_path / "log.txt", errors), step_events(ProgressWriter(path), errors):
        task_executor.execute_single_task(task_name="train")
    assert task_executor.execute_single_task is failing_task  # put back
    assert "ValueError: no photo" in (tmp_path / "log.txt").read_text()
    [start, end] = read_events(path)
    assert (start["step"], start["status"], end["status"], end["error"]) == \
        ("train", "started", "failed", "ValueError: no photo in class folder 'dog'")


def test_make_run_ends_a_failed_step_with_one_error_line(tmp_path, image_folder, monkeypatch, capsys):
    def failing_run(config, output_root, progress, errors):
        progress.emit("run", steps=STEPS)
        for step in ("ingest", "preprocess"):
            progress.emit("step", step=step, status="started")
            progress.emit("step", step=step, status="succeeded", seconds=1)
        progress.emit("step", step="train", status="started")
        progress.emit("step", step="train", status="failed", seconds=1, error="ValueError: boom")
        raise RuntimeError("Pipeline 'catdog-training' finished with status FAILURE. Inner task failed: 'train'.")

    monkeypatch.setattr(local, "run_local", failing_run)
    progress = tmp_path / "progress.jsonl"
    assert run.main([f"DATA={image_folder}", "WEIGHTS=none", f"OUTPUT_ROOT={tmp_path / 'out'}",
                     f"PROGRESS_FILE={progress}"]) == 1
    printed = capsys.readouterr()
    log = next((tmp_path / "out" / "logs").glob("run-*.log"))
    assert printed.err == f"error: step train failed: ValueError: boom (full log: {log})\n"
    assert printed.out.splitlines()[0].startswith("run id: ")  # the id make run made for the run
    assert printed.out.splitlines()[1:] == [f"full log: {log} (VERBOSE=1 prints it here)",
                                        "[1/6] ingest ... 1 s", "[2/6] preprocess ... 1 s",
                                        "[3/6] train ...", "[3/6] train failed after 1 s: ValueError: boom"]
    assert read_events(progress)[-1]["error"] == f"step train failed: ValueError: boom (full log: {log})"


# --- up-front checks ---------------------------------------------------------------------------

def test_a_mistyped_parameter_or_setting_gets_did_you_mean(capsys):
    assert run.main(["frozen_epoch=3"]) == 2
    assert "unknown parameter(s) ['frozen_epoch'] (did you mean frozen_epochs?)" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"unknown setting WEIGTHS \(did you mean WEIGHTS\?\)"):
        words.parse_arguments(["WEIGTHS=x.h5"])


def test_an_empty_data_folder_fails_up_front_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(local, "run_local", lambda *a: pytest.fail("must not run"))
    (tmp_path / "data" / "cat").mkdir(parents=True)
    assert run.main([f"DATA={tmp_path / 'data'}", "WEIGHTS=none", f"OUTPUT_ROOT={tmp_path / 'out'}"]) == 2
    assert capsys.readouterr().err == (f"error: DATA={tmp_path / 'data'} has no files: put the photos in one "
                                       "sub-folder per class (e.g. cat/ and dog/), or give a .zip/.tar.gz archive\n")


def test_imagenet_weights_offline_and_not_cached_fail_up_front(tmp_path, image_folder, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(local, "keras_cache_dirs", lambda: [tmp_path / "keras" / "models"])
    monkeypatch.setattr(local, "url_problem", lambda url: "[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(local, "run_local", lambda *a: pytest.fail("must not run"))
    assert run.main([f"DATA={image_folder}", "backbone_alpha=0.35", f"OUTPUT_ROOT={tmp_path / 'out'}"]) == 2
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"  # 256 px uses the 224 weights
    url = f"https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/{name}"
    err = capsys.readouterr().err
    assert err.startswith(f"error: WEIGHTS=imagenet: {name} is not in the Keras cache")
    assert f"Pass WEIGHTS=path/to/{name} (download it from {url})" in err
    (tmp_path / "keras" / "models").mkdir(parents=True)
    (tmp_path / "keras" / "models" / name).write_bytes(b"cached")
    local.check_local_inputs(build_config({"data_uri": str(image_folder)}))  # in the cache: no question asked


def test_url_problem_asks_with_a_head_request(http_server):
    from tests.helpers import free_port

    (http_server.root / "w.h5").write_bytes(b"x")
    assert real_url_problem(http_server.url("w.h5")) is None
    assert real_url_problem(f"http://127.0.0.1:{free_port()}/w.h5")  # nothing listens: says why


def test_retrain_now_fails_at_request_time_with_the_same_checks(tmp_path, monkeypatch):
    from feedback.retraining.config import parse_training_words

    (tmp_path / "data").mkdir()
    training = parse_training_words([f"DATA={tmp_path / 'data'}", "WEIGHTS=none"], str(tmp_path / "store"))
    with pytest.raises(ConfigError, match="has no files"):
        training.run_config(training.default, {})
    training = parse_training_words(["DATA=https://example.com/photos.zip", "WEIGHTS=none"], str(tmp_path / "store"))
    monkeypatch.setenv("CATDOG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(local, "url_problem", lambda url: "timed out")
    with pytest.raises(ConfigError, match=r"DATA=https://example.com/photos.zip cannot be downloaded \(timed out\)"):
        training.run_config(training.default, {})
