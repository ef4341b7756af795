"""A run's log as people open it from the dashboard: GET /api/runs/{id}/log is plain text (not the
run's JSON with an escaped tail), its last LOG_LIMIT_BYTES, colours removed and the server's own
folders shortened; 404 JSON for an unknown run and for a remote run (whose log is in its console).
The dashboard's "log" link opens it (Playwright, headless Chromium)."""

from __future__ import annotations

import dataclasses

import pytest
from playwright.sync_api import expect

from catdog.registry import ModelRegistry
from feedback.retraining.config import TrainingConfig
from feedback.retraining.launchers.base import Observation, RunHandle
from feedback.web.routers.runs import LOG_LIMIT_BYTES, shorten_paths
from tests.feedback_fixtures import FakePredictor, feedback_settings, running_app
from tests.feedback.monitoring.test_dashboard import FakeLauncher, training_config
from tests.helpers import REPO_ROOT

CONSOLE = "https://console.example.test/runs/r-1"


class LogLauncher(FakeLauncher):
    """Writes `log` (text) to the run's log file at start; remote=True gives a console URL instead."""

    def __init__(self, tmp_path, remote: bool = False):
        super().__init__(Observation("failed", None, 1, "boom"))  # ended: the next start is not refused
        self.tmp_path, self.remote, self.log = tmp_path, remote, ""

    def start(self, run_id, target, config) -> RunHandle:
        super().start(run_id, target, config)
        if self.remote:
            return RunHandle(remote_id="r-1", console_url=CONSOLE)
        path = self.tmp_path / "runs" / run_id / "log.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.log)
        return RunHandle(log_uri=str(path))


@pytest.fixture
def log_app(tmp_path):
    local = training_config(tmp_path, ModelRegistry(tmp_path / "registry")).default
    training = TrainingConfig({"local": local, "vertex": dataclasses.replace(local, name="vertex")})
    local_launcher, remote_launcher = LogLauncher(tmp_path), LogLauncher(tmp_path, remote=True)
    with running_app(feedback_settings(tmp_path, "http://127.0.0.1:9"), predictor=FakePredictor(), training=training,
                     launchers={"local": local_launcher, "vertex": remote_launcher}) as app:
        yield app, local_launcher


def start(app, target: str = "local") -> str:
    started = app.post("/api/retrain", json={"target": target})
    assert started.status_code == 202, started.text
    return started.json()["id"]


def test_the_log_is_plain_text_without_the_servers_folders(log_app, tmp_path):
    app, launcher = log_app
    output = tmp_path / "out"
    launcher.log = (f"\x1b[1;32mingest\x1b[0m started\nDATA={tmp_path}/data\n"
                    f"model saved to {output}/catdog-training-1/train/model\n"
                    f'  File "{REPO_ROOT}/pipelines/run.py", line 3\n'
                    "test accuracy 0.9100 (\u00e9t\u00e9: UTF-8 kept)\n")
    run_id = start(app)
    answer = app.get(f"/api/runs/{run_id}/log")
    assert answer.status_code == 200 and answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert answer.headers["x-content-type-options"] == "nosniff"
    text = answer.text
    assert text.startswith("ingest started\n") and "\x1b" not in text
    assert "model saved to $OUTPUT_ROOT/catdog-training-1/train/model\n" in text
    assert '  File "./pipelines/run.py", line 3\n' in text
    assert text.endswith("test accuracy 0.9100 (\u00e9t\u00e9: UTF-8 kept)\n")
    assert str(REPO_ROOT) not in text and str(tmp_path) not in text
    tail = app.get(f"/api/runs/{run_id}").json()["log_tail"]  # the run's JSON carries the same, shortened
    assert tail == text and str(tmp_path) not in app.get(f"/api/runs/{run_id}").text


def test_a_long_log_answers_its_last_part(log_app):
    app, launcher = log_app
    lines = [f"line {i:07d} " + "x" * 90 + "\n" for i in range(int(1.5 * LOG_LIMIT_BYTES) // 100)]
    launcher.log = "".join(lines)
    text = app.get(f"/api/runs/{start(app)}/log").text
    assert len(text.encode()) <= LOG_LIMIT_BYTES and text.endswith(lines[-1])
    assert lines[0] not in text and lines[-len(lines) // 2] in text


def test_unknown_and_remote_runs_are_404_json(log_app):
    app, _ = log_app
    unknown = app.get("/api/runs/no-such-run/log")
    assert unknown.status_code == 404 and unknown.json() == {"detail": "no training run no-such-run"}
    remote = app.get(f"/api/runs/{start(app, 'vertex')}/log")
    assert remote.status_code == 404 and remote.headers["content-type"] == "application/json"
    assert CONSOLE in remote.json()["detail"]


@pytest.mark.parametrize("folders, text, expected", [
    ({"/srv/app": "."}, "/srv/app/x /srv/app2/y /srv/app. /srv/app", "./x /srv/app2/y /srv/app. ."),
    ({"/tmp": "$TMPDIR", "/tmp/out": "$OUTPUT_ROOT"}, "/tmp/out/m /tmp/a /var/tmp/b", "$OUTPUT_ROOT/m $TMPDIR/a /var/tmp/b"),
    ({"/": "root"}, "/etc/x", "/etc/x"),  # never the whole file system
])
def test_shorten_paths(folders, text, expected):
    assert shorten_paths(text, folders) == expected


def test_the_dashboards_log_link_opens_the_plain_text(log_app, page):
    app, launcher = log_app
    launcher.log = 'step 1/6: ingest\n{"quoted": "json stays as written"}\nthe last line\n'
    run_id = start(app)
    start(app, "vertex")
    page.goto(app.url + "/dashboard")
    rows = page.get_by_test_id("run-row")
    expect(rows).to_have_count(2)
    local = page.locator(f'[data-testid=run-row][data-run-id="{run_id}"]')
    link = local.get_by_test_id("run-log")
    expect(link).to_have_attribute("href", f"/api/runs/{run_id}/log")
    with page.context.expect_page() as opened:
        link.click()
    log_page = opened.value
    log_page.wait_for_load_state()
    assert log_page.locator("body").inner_text().rstrip("\n") == launcher.log.rstrip("\n")  # as written, not JSON
    expect(rows.first.get_by_role("link", name="console")).to_have_attribute("href", CONSOLE)  # remote: its console
    expect(rows.first.get_by_test_id("run-log")).to_have_count(0)
