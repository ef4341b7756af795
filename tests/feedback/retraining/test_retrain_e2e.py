"""End to end: predictor + feedback app + real kfp.local pipeline runs started from the app.

1. No champion yet, so the predictor is live but not ready. People upload labelled photos
   (/api/upload-data); "Retrain now" (POST /api/retrain) runs the pipeline in its own process on
   DATA plus the feedback dataset (a tiny model, a few epochs); the test follows its progress to the
   end: v1 is promoted ("no champion yet"), the predictor picks it up, the dashboard shows it.
2. People predict photos through the app with v1 and confirm or correct them; a second retrain
   registers v2 and the champion decision (here: v1 kept, a tie does not promote) is recorded on
   the run, in the registry and on the dashboard.
(A random-init MobileNet at 32 px learns nothing in a few CPU epochs, so accuracy is a tie; the
test is about the loop, not the model. The real-data loop is in docs/feedback.md.)
"""

from __future__ import annotations

import time

import pytest

from catdog.registry import ModelRegistry
from tests.feedback_fixtures import feedback_settings, running_app
from tests.helpers import CLASS_COLORS, image_bytes, make_class_folders
from tests.serving_fixtures import make_model, run_server

RUN_TIMEOUT_S = 900
PARAMETERS = ["WEIGHTS=none", "image_size=32", "batch_size=8", "frozen_epochs=1", "finetune_epochs=0",
              "augmentations=flip"]


def follow(app, run_id: str) -> tuple[dict, list[tuple[int, str | None]]]:
    """Poll the run until it ends; returns its last state and (steps_done, step) as seen while it ran."""
    seen, deadline = [], time.monotonic() + RUN_TIMEOUT_S
    while True:
        run = app.get(f"/api/runs/{run_id}").json()
        if run["state"] not in ("queued", "running") or time.monotonic() > deadline:
            return run, seen
        seen.append((run["steps_done"], run["step"]))
        time.sleep(0.3)


def wait_served(app, version: str) -> dict:
    deadline = time.monotonic() + 60  # the predictor follows the champion alias
    while True:
        status = app.get("/api/status").json()["predictor"]
        if status.get("model_version") == version or time.monotonic() > deadline:
            return status
        time.sleep(0.3)


@pytest.mark.slow
def test_upload_validate_retrain_and_the_new_champion_is_served(tmp_path):
    from feedback.retraining.config import parse_training_words

    registry = ModelRegistry(tmp_path / "registry")
    data = make_class_folders(tmp_path / "data", {"cat": 16, "dog": 16})
    training = parse_training_words([f"DATA={data}", f"REGISTRY={registry.uri}", f"OUTPUT_ROOT={tmp_path / 'outputs'}",
                                     *PARAMETERS], str(tmp_path / "store"))
    settings = feedback_settings(tmp_path, "http://127.0.0.1:9", runs_dir=str(tmp_path / "runs"),
                                 run_poll_interval_s=0.3)
    with run_server(make_model("champion", registry.uri, reload_interval=0.5), wait_ready=False) as predictor:
        settings = settings.model_copy(update={"predictor_url": predictor.url})
        with running_app(settings, training=training) as app:
            assert app.get("/api/status").json()["predictor"]["ready"] is False
            photos = [(image_bytes(seed=500 + i, color=CLASS_COLORS[label]), label)
                      for i, label in enumerate(["cat", "dog"] * 4)]
            uploaded = app.post("/api/upload-data", files=[("files[]", (f"{i}.jpg", data_, "image/jpeg"))
                                                           for i, (data_, _) in enumerate(photos)],
                                data={"labels[]": [label for _, label in photos]})
            assert uploaded.status_code == 200 and len(uploaded.json()["added"]) == 8, uploaded.text

            # 1. Retrain now: the first champion
            started = app.post("/api/retrain", json={"parameters": {"seed": 7}})
            assert started.status_code == 202, started.text
            first = started.json()
            assert (first["validated_photos"], first["new_validated_photos"]) == (8, 8)
            refused = app.post("/api/retrain", json={})
            assert refused.status_code == 409 and refused.json()["run_id"] == first["id"]
            run, seen = follow(app, first["id"])
            assert run["state"] == "succeeded", run["log_tail"]
            assert (run["promoted"], run["version"], run["champion_version"]) == (True, 1, 1), run["reason"]
            # progress was visible while it ran and only moved forward (a short step such as ingest may
            # end between two polls; train takes seconds); the finished run counts all seven steps
            done = [steps_done for steps_done, _ in seen]
            assert done == sorted(done) and ("train" in {step for _, step in seen}), seen
            assert run["steps_done"] == run["steps_total"] == 7, run
            split_counts = registry.read_json(1, "metadata.json")["split_counts"]
            assert sum(split_counts.values()) == 32 + 8  # DATA's photos and the 8 from the app
            assert registry.versions() == [1] and registry.champion_version() == 1
            assert wait_served(app, "1")["ready"] is True

            # 2. predictions with v1, confirmed and corrected, and a second run
            for i in range(4):
                label = "cat" if i % 2 else "dog"
                answer = app.predict(image_bytes(seed=700 + i, color=CLASS_COLORS[label]))
                assert answer.status_code == 200 and answer.json()["model_version"] == "1", answer.text
                assert app.validate(answer.json()["id"], label).status_code == 201
            second = app.post("/api/retrain", json={}).json()
            assert (second["validated_photos"], second["new_validated_photos"]) == (12, 4)
            run, _ = follow(app, second["id"])
            assert run["state"] == "succeeded" and run["version"] == 2, run["log_tail"]
            assert sum(registry.read_json(2, "metadata.json")["split_counts"].values()) == 32 + 12
            decision = [d for d in registry.history() if d["challenger_version"] == 2][0]
            assert run["promoted"] is decision["promoted"] and run["reason"] == decision["reason"]
            assert registry.champion_version() == run["champion_version"]

            dashboard = app.get("/api/dashboard").json()
            champion = registry.champion_version()
            evaluation = registry.read_json(champion, "evaluation.json")
            assert dashboard["champion"]["version"] == champion
            assert dashboard["champion"]["metrics"]["accuracy"] == pytest.approx(evaluation["accuracy"])
            assert [v["version"] for v in dashboard["versions"]] == [1, 2] or \
                [v["version"] for v in dashboard["versions"]] == [2, 1]
            assert wait_served(app, str(champion))["model_version"] == str(champion)
