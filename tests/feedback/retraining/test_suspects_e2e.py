"""End to end: the label-issues loop through the app and two real kfp.local runs.

1. DATA holds a near-duplicate pair under two labels (the same pixels as JPEG in cat/ and as PNG
   in dog/), so the list has entries whatever the weights. "Retrain now" runs the pipeline;
   select-champion records the run's suspects in the registry beside v1 and the alias names them.
2. The app imports them (POST /api/training-photos/import): they are in the queue as training
   photos. Two reviewers give verdicts on the first two listed: one is relabelled, one "neither".
   The publisher writes <FEEDBACK_URI>/label-overrides.json; nothing enters the feedback dataset.
3. The next run records the overrides it took in (run_overrides), and its ingest applies them:
   the dataset report counts one relabelled and one left out, and the user's data is unchanged.
(A random-init MobileNet at 32 px: the test is about the loop, not the model; near-identical
photos have near-identical features whatever the weights.)
"""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from PIL import Image

from catdog.registry import ModelRegistry
from feedback.store import training_queries
from tests.feedback.retraining.test_retrain_e2e import PARAMETERS, follow
from tests.feedback_fixtures import feedback_settings, running_app
from tests.helpers import CLASS_COLORS, image_bytes, make_class_folders
from tests.serving_fixtures import make_model, run_server


def tree(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def as_png(data: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buffer, format="PNG")
    return buffer.getvalue()


def newest_ingest_report(outputs) -> dict:
    reports = [p for p in outputs.rglob("report_json") if p.parent.name == "ingest"]
    return json.loads(max(reports, key=lambda p: p.stat().st_mtime).read_text())


@pytest.mark.slow
def test_flagged_reviewed_overridden_and_applied_by_the_next_run(tmp_path):
    from feedback.retraining.config import parse_training_words

    registry = ModelRegistry(tmp_path / "registry")
    data = make_class_folders(tmp_path / "data", {"cat": 16, "dog": 16})
    twin = image_bytes(seed=4242, color=CLASS_COLORS["cat"])
    (data / "cat" / "twin.jpg").write_bytes(twin)
    (data / "dog" / "twin-again.png").write_bytes(as_png(twin))
    before = tree(data)
    outputs = tmp_path / "outputs"
    training = parse_training_words([f"DATA={data}", f"REGISTRY={registry.uri}", f"OUTPUT_ROOT={outputs}",
                                     *PARAMETERS], str(tmp_path / "store"))
    settings = feedback_settings(tmp_path, "http://127.0.0.1:9", runs_dir=str(tmp_path / "runs"),
                                 run_poll_interval_s=0.3)
    with run_server(make_model("champion", registry.uri, reload_interval=0.5), wait_ready=False) as predictor:
        settings = settings.model_copy(update={"predictor_url": predictor.url})
        with running_app(settings, training=training) as app:
            app.service.training_photos.close()  # the route imports here: the 30 s watcher could race it
            # 1. the first run: its suspects are recorded in the registry, named by the alias
            first = app.post("/api/retrain", json={"parameters": {"seed": 7}}).json()
            run, _ = follow(app, first["id"])
            assert run["state"] == "succeeded" and run["promoted"], run["log_tail"]
            suspects_uri = registry.champion()["suspects_uri"]
            listed = json.loads(open(suspects_uri).read())["suspects"]
            assert len(listed) >= 2, listed
            relabel, leave_out = listed[0], listed[1]
            other = "dog" if relabel["given_label"] == "cat" else "cat"

            # 2. imported into the queue; two reviewers judge the pair
            report = app.post("/api/training-photos/import").json()
            assert report["champion_version"] == 1 and report["added"] == len(listed), report
            queue = app.get("/api/review-queue", params={"order": "training_suspects_first", "limit": 500}).json()
            cards = {p["training"]["source"]: p for p in queue["predictions"] if p["source"] == "training"}
            assert {relabel["source"], leave_out["source"]} <= set(cards)
            assert app.validate(cards[relabel["source"]]["id"], other, by="ana").status_code == 201
            assert app.validate(cards[leave_out["source"]]["id"], "neither", by="ben").status_code == 201
            app.service.publisher.flush_manifest(always=True)
            overrides = json.loads((tmp_path / "store" / "label-overrides.json").read_text())["overrides"]
            assert sorted((o["source"], o["label"], o["reviewers"][0]["by"]) for o in overrides) == sorted([
                (relabel["source"], other, "ana"), (leave_out["source"], "neither", "ben")])
            assert not (tmp_path / "store" / "dataset" / "dog").exists() or \
                not list((tmp_path / "store" / "dataset").rglob("*.jpg"))

            # 3. the next run takes them in and its ingest applies them
            second = app.post("/api/retrain", json={}).json()
            with app.service.db.read() as session:
                taken = {(o.photo_sha256, o.label) for o in training_queries.run_overrides(session, second["id"])}
            assert taken == {(relabel["sha256"], other), (leave_out["sha256"], "neither")}
            run, _ = follow(app, second["id"])
            assert run["state"] == "succeeded", run["log_tail"]
            assert run["label_overrides"] == 2  # GET /api/runs/{id} says how many it took in
            applied = newest_ingest_report(outputs)["overrides"]
            assert (applied["relabelled"], applied["left_out"], applied["unmatched"]) == (1, 1, []), applied
            assert {p["source"]: p["outcome"] for p in applied["photos"]} == {
                relabel["source"]: "relabelled", leave_out["source"]: "left out"}
            assert sum(registry.read_json(2, "metadata.json")["split_counts"].values()) == 34 - 1
    assert tree(data) == before  # the user's data: never modified or moved
