"""The retraining routes: /api/retrain (= /api/train), /api/runs, /api/training-status, cancel."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.feedback_fixtures import feedback_settings, photo, predictor, running_app  # noqa: F401 (fixtures)
from tests.feedback.retraining.test_runs import FakeLauncher, succeed


@pytest.fixture
def training(tmp_path, image_folder):
    from feedback.retraining.config import parse_training_words

    return parse_training_words([f"DATA={image_folder}", f"REGISTRY={tmp_path / 'registry'}"], str(tmp_path / "store"))


@pytest.fixture
def launcher():
    return FakeLauncher()


@pytest.fixture
def app(tmp_path, predictor, training, launcher):  # noqa: F811
    with running_app(feedback_settings(tmp_path, predictor.url), training=training,
                     launchers={"local": launcher}) as client:
        yield client


def test_retrain_starts_a_run_and_the_run_can_be_followed(app, launcher):
    prediction = app.predict(photo(1)).json()
    assert app.validate(prediction["id"], "dog").status_code == 201
    answer = app.post("/api/retrain", json={"parameters": {"frozen_epochs": 1, "finetune_epochs": 0}})
    assert answer.status_code == 202, answer.text
    run = answer.json()
    assert run["state"] == "running" and run["trigger"] == "manual" and run["target"] == "local"
    assert run["parameters"] == {"frozen_epochs": 1, "finetune_epochs": 0} and run["validated_photos"] == 1
    assert launcher.started[0][1]["frozen_epochs"] == 1

    app.service.runs.refresh()  # what the watcher does every RUN_POLL_INTERVAL_S
    one = app.get(f"/api/runs/{run['id']}").json()
    assert (one["state"], one["step"], one["steps_done"], one["steps_total"]) == ("running", "train", 2, 7)
    status = app.get("/api/training-status").json()
    assert status["active"] is True and status["run"]["id"] == run["id"] and status["targets"] == ["local"]
    assert status["new_validated_photos"] == 1 and status["retrain_min_new"] == 100

    succeed(launcher, run["id"], promoted=True, version=2)
    app.service.runs.refresh()
    listed = app.get("/api/runs").json()
    assert listed["active"] is None
    assert [(r["id"], r["state"], r["promoted"], r["version"]) for r in listed["runs"]] == [(run["id"], "succeeded", True, 2)]
    assert app.get("/api/training-status").json()["new_validated_photos"] == 0


def test_simultaneous_requests_start_one_run_and_the_others_get_409_with_its_id(app, launcher):
    def ask(i: int):
        return app.post("/api/train" if i % 2 else "/api/retrain", json={})

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    started = [a.json() for a in answers if a.status_code == 202]
    refused = [a.json() for a in answers if a.status_code == 409]
    assert len(started) == 1 and len(refused) == 7, [a.status_code for a in answers]
    assert {r["run_id"] for r in refused} == {started[0]["id"]}
    assert all("already active" in r["detail"] for r in refused)
    assert len(launcher.started) == 1


@pytest.mark.parametrize("body, fragment", [
    ({"parameters": {"frozen_epochs": "many"}}, "frozen_epochs"),
    ({"parameters": {"registry_uri": "/tmp/x"}}, "registry_uri: set by the app"),
    ({"parameters": {"run_id": "mine"}}, "run_id: set by the app"),
    ({"target": "vertex"}, "'vertex' is not configured"),
])
def test_bad_retrain_requests_are_422_naming_the_key(app, body, fragment):
    answer = app.post("/api/retrain", json=body)
    assert answer.status_code == 422 and fragment in answer.json()["detail"]
    assert app.get("/api/runs").json()["runs"] == []


def test_unknown_body_fields_are_422(app):
    assert app.post("/api/retrain", json={"params": {}}).status_code == 422


def test_stop_cancels_the_run(app, launcher):
    run = app.post("/api/retrain").json()
    answer = app.post(f"/api/runs/{run['id']}/cancel")
    assert answer.status_code == 200 and answer.json()["state"] == "cancelled"
    assert launcher.cancelled == [run["id"]]
    assert app.post(f"/api/runs/{run['id']}/cancel").status_code == 409
    assert app.post("/api/runs/unknown/cancel").status_code == 404
    assert app.get("/api/runs/unknown").status_code == 404


def test_a_launch_failure_is_502_and_recorded(app, launcher):
    from feedback.retraining.launchers.base import LaunchError

    launcher.fail_start = LaunchError("cannot start the local pipeline process: no python")
    answer = app.post("/api/retrain")
    assert answer.status_code == 502 and "no python" in answer.json()["detail"]
    (run,) = app.get("/api/runs").json()["runs"]
    assert run["state"] == "failed" and "no python" in run["reason"]


def test_retraining_routes_need_the_token_and_the_same_origin(tmp_path, predictor, training, launcher):  # noqa: F811
    settings = feedback_settings(tmp_path, predictor.url, app_token="s3cret")
    with running_app(settings, training=training, launchers={"local": launcher}) as client:
        assert client.post("/api/retrain").status_code == 401
        assert client.post("/api/retrain", headers={"Authorization": "Bearer s3cret",
                                                    "Origin": "http://evil.example"}).status_code == 403
        run = client.post("/api/retrain", headers={"Authorization": "Bearer s3cret"}).json()
        assert client.post(f"/api/runs/{run['id']}/cancel").status_code == 401
        assert client.get(f"/api/runs/{run['id']}").status_code == 200  # reading needs no token
        assert launcher.started and not launcher.cancelled


def test_any_error_of_a_launcher_fails_the_run_and_a_refused_stop_is_502(app, launcher):
    launcher.fail_start = ValueError("bad PipelineJob")  # not one of ours: whatever a client library raises
    answer = app.post("/api/retrain")
    assert answer.status_code == 502 and "bad PipelineJob" in answer.json()["detail"]
    assert app.get("/api/training-status").json()["active"] is False

    launcher.fail_start = None
    run = app.post("/api/retrain").json()

    def refuse(run):
        raise RuntimeError("HTTP 403 from the KFP API")

    launcher.cancel = refuse
    answer = app.post(f"/api/runs/{run['id']}/cancel")
    assert answer.status_code == 502 and "HTTP 403" in answer.json()["detail"]
    assert app.get(f"/api/runs/{run['id']}").json()["state"] == "running"


def test_a_run_without_promotion_has_one_step_less(app, launcher):
    run = app.post("/api/retrain").json()
    succeed(launcher, run["id"], promoted=False)
    app.service.runs.refresh()
    done = app.get(f"/api/runs/{run['id']}").json()
    assert (done["promoted"], done["steps_total"], done["reason"]) == (False, 6, "champion kept")
