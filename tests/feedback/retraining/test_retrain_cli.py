"""`make app`/`make up`/`make retrain-if-needed` words and `python -m feedback.retraining.cron` as cron runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from feedback.settings import ENVIRONMENT
from tests.helpers import REPO_ROOT



def make_dry_run(*words: str) -> str:
    result = subprocess.run(["make", "-n", *words], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "MAKEFLAGS": ""})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_makefile_knows_every_app_setting():
    text = (REPO_ROOT / "Makefile").read_text()
    listed = re.search(r"APP_ENVIRONMENT := (.*?)\n(?!\s)", text, re.DOTALL).group(1).replace("\\", " ").split()
    assert sorted(listed) == sorted(ENVIRONMENT)


def test_make_app_passes_the_run_words_and_keeps_the_app_settings_out():
    command = make_dry_run("app", "TARGET=local,vertex", "DATA=photos", "frozen_epochs=1", "VERTEX_DATA=gs://b/d",
                           "DATABASE_URL=sqlite:///x.db", "LABELS=cat,dog", "PORT=9000")
    line = next(ln for ln in command.splitlines() if "feedback.web.server" in ln)
    assert "--port 9000" in line
    words = line.split("feedback.web.server", 1)[1].split()
    assert {"TARGET=local,vertex", "DATA=photos", "frozen_epochs=1", "VERTEX_DATA=gs://b/d", "REGISTRY=registry"} <= set(words)
    assert not any(w.startswith(("DATABASE_URL=", "LABELS=", "PORT=")) for w in words)


def test_make_up_gives_the_app_the_predictor_s_registry():
    command = make_dry_run("up", "REGISTRY=/tmp/reg", "TARGET=local")
    app_line = next(ln for ln in command.splitlines() if "feedback.web.server" in ln)
    assert "serving.server --model champion --registry /tmp/reg" in command
    assert "REGISTRY=/tmp/reg" in app_line and "TARGET=local" in app_line


def retrain(tmp_path, *args: str, **env) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
               "FEEDBACK_URI": str(tmp_path / "store"), "RUNS_DIR": str(tmp_path / "runs"), **env}
    return subprocess.run([sys.executable, "-m", "feedback.retraining.cron", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=environ)


def test_retrain_if_needed_does_nothing_below_the_threshold(tmp_path, image_folder):
    result = retrain(tmp_path, "--if-needed", f"DATA={image_folder}", RETRAIN_MIN_NEW="5")
    assert result.returncode == 0, result.stderr
    assert "not needed: 0 photo(s) validated since the last run, threshold RETRAIN_MIN_NEW=5" in result.stdout
    assert not (tmp_path / "runs").exists()


def test_retrain_while_a_run_is_active_starts_nothing(tmp_path, image_folder):
    from feedback.store.db import migrate, open_database
    from feedback.store.tables import TrainingRun

    db = open_database(f"sqlite:///{tmp_path}/db.sqlite")
    migrate(db)
    with db.writing() as session:
        session.add(TrainingRun(id="a" * 32, target="kubeflow", trigger="manual", state="running", active=1,
                                parameters={}, validation_cutoff_id=0, validated_photos=0, new_validated_photos=0,
                                cancel_requested=False, steps_done=0))
    db.close()
    result = retrain(tmp_path, f"DATA={image_folder}", "WEIGHTS=none")  # (imagenet: a download check first)
    assert result.returncode == 0, result.stderr
    assert f"not started: a training run is already active: {'a' * 32}" in result.stdout


def test_retrain_with_bad_words_or_missing_data_exits_2(tmp_path):
    result = retrain(tmp_path, "frozen_epochs=-1")
    assert result.returncode == 2 and "frozen_epochs" in result.stderr
    result = retrain(tmp_path, f"DATA={tmp_path / 'nothing'}")
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_the_server_refuses_bad_training_words(tmp_path):
    environ = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
               "FEEDBACK_URI": str(tmp_path / "store")}
    result = subprocess.run([sys.executable, "-m", "feedback.web.server", "TARGET=vertex"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env=environ)
    assert result.returncode == 2
    assert "TARGET=vertex reads the published photos from FEEDBACK_URI" in result.stderr
