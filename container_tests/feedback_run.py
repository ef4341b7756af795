"""make image-test: the feedback app image run beside the predictor image, the way a user runs it.

The predictor container serves the model in KServe mode (/mnt/models, read-only); the feedback
container gets a podman named volume at /data (its SQLite database and photos: the image's
defaults), APP_TOKEN and PREDICTOR_URL, and listens on 127.0.0.1 (--network host). Checks: the
Alembic migrations ran at start on the volume, the app runs as uid 10001, /ready is true against
the predictor container, one photo predicted (the model the predictor serves) and validated
through the API (bearer token), then the container is replaced by a fresh one on the same volume:
the row, its verdict and the dataset file are still there.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from container_tests.common import LOOPBACK, USER_ID, check, say, timed
from container_tests.build import Podman
from container_tests.predictor_run import container, free_port, kserve_container_args, process_uid, wait_ready

DATABASE = "/data/feedback_data/feedback.db"
VOLUME = "catdog-image-test-feedback"


def in_container(podman: Podman, name: str, code: str) -> str:
    """Python run in the container (its own user, its own files): stdout, or the error text."""
    result = podman("exec", name, "python", "-c", code, check=False)
    return result.stdout.strip() if result.returncode == 0 else f"error {result.returncode}: {result.stderr[-500:]}"


def schema_version(podman: Podman, name: str) -> str:
    return in_container(podman, name, "import sqlite3; print(sqlite3.connect('file:" + DATABASE + "?mode=ro', "
                        "uri=True).execute('select version_num from alembic_version').fetchone()[0])")


def run_feedback(podman: Podman, image: str, predictor_image: str, model: Path, version: str) -> None:
    import requests

    from tests.serving_fixtures import photo

    token = secrets.token_hex(16)
    predictor_port, app_port = free_port(), free_port()
    app = f"http://{LOOPBACK}:{app_port}"
    auth = {"Authorization": f"Bearer {token}"}
    podman("volume", "rm", "-f", VOLUME, check=False)
    podman("volume", "create", VOLUME)
    app_args = ["--network", "host", "-v", f"{VOLUME}:/data", "-e", f"APP_TOKEN={token}",
                "-e", f"PREDICTOR_URL=http://{LOOPBACK}:{predictor_port}"]
    listen = ("--host", LOOPBACK, "--port", str(app_port))
    try:
        with timed("feedback app beside the predictor container"), \
                container(podman, "catdog-image-test-fb-predictor", predictor_image, "--network", "host",
                          "-v", f"{model}:/mnt/models:ro", args=(*kserve_container_args(), "--host", LOOPBACK,
                                                                 "--port", str(predictor_port))) as predictor:
            wait_ready(podman, predictor, f"http://{LOOPBACK}:{predictor_port}/v2/health/ready")
            say(f"  podman run {image} {' '.join(listen)} with a volume at /data, APP_TOKEN, PREDICTOR_URL")
            with container(podman, "catdog-image-test-feedback", image, *app_args, args=listen) as name:
                seconds = wait_ready(podman, name, app + "/health")
                check(f"feedback: up (/health) after {seconds:.1f} s", True)
                logs = podman("logs", name, check=False)
                revision = schema_version(podman, name)
                check("feedback: migrations ran at start on the volume (alembic_version in /data)",
                      len(revision) >= 4 and not revision.startswith("error"), revision + (logs.stderr[-500:]))
                check("feedback: the app process runs as uid 10001", process_uid(podman, name) == USER_ID)
                ready = requests.get(app + "/ready", timeout=30)
                check("feedback: /ready true against the predictor container", ready.status_code == 200
                      and ready.json().get("ready") is True, f"{ready.status_code} {ready.text[:300]}")
                import base64

                predicted = requests.post(app + "/api/predict", timeout=60, json={
                    "image_b64": base64.b64encode(photo(3)).decode(), "filename": "image-test.jpg"})
                body = predicted.json() if predicted.status_code == 200 else {}
                check("feedback: one photo predicted by the model the predictor serves",
                      body.get("predicted_class") in ("cat", "dog") and body.get("model_version") == version,
                      f"{predicted.status_code} {predicted.text[:300]}")
                prediction_id, sha = body.get("id", "none"), body.get("photo", {}).get("sha256", "none")
                refused = requests.post(f"{app}/api/predictions/{prediction_id}/validation", json={"label": "dog"},
                                        timeout=30)
                check("feedback: a validation without the token -> 401", refused.status_code == 401,
                      str(refused.status_code))
                # with APP_TOKEN set a verdict must name who gives it ("by"): a 422 without it
                nameless = requests.post(f"{app}/api/predictions/{prediction_id}/validation", json={"label": "dog"},
                                         headers=auth, timeout=30)
                check("feedback: a validation without 'by' while APP_TOKEN is set -> 422", nameless.status_code == 422
                      and "by" in nameless.text, f"{nameless.status_code} {nameless.text[:300]}")
                validated = requests.post(f"{app}/api/predictions/{prediction_id}/validation",
                                          json={"label": "dog", "by": "image-test"}, headers=auth, timeout=30)
                check("feedback: validated as dog through the API (bearer token, by name)", validated.status_code == 201
                      and validated.json().get("validated_label") == "dog", f"{validated.status_code} "
                      f"{validated.text[:300]}")
            list_dataset = ("import glob; print(sorted(p.rsplit('/', 2)[-2] + '/' + p.rsplit('/', 1)[-1][:64] "
                            "for p in glob.glob('/data/feedback_data/dataset/*/*')))")
            with container(podman, "catdog-image-test-feedback-2", image, *app_args, args=listen) as name:
                wait_ready(podman, name, app + "/health")
                again = requests.get(f"{app}/api/predictions/{prediction_id}", timeout=30)
                check("feedback: a fresh container on the same volume has the row and its verdict",
                      again.status_code == 200 and again.json().get("validated_label") == "dog",
                      f"{again.status_code} {again.text[:300]}")
                files = in_container(podman, name, list_dataset)
                check("feedback: ... and the dataset file (dataset/dog/<sha256>)", f"dog/{sha}" in files, files)
                check("feedback: ... and the same schema revision (no migration to run)",
                      schema_version(podman, name) == revision, revision)
    finally:
        podman("volume", "rm", "-f", VOLUME, check=False)
