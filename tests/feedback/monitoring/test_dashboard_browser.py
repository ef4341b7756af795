"""The dashboard in a real browser (Playwright driving Debian's Chromium, headless) under the app's
CSP: every chart drawn by plotly.js (served by the app), the numbers of /api/dashboard on the page,
no console error and no CSP violation; the runs table, Stop, Retrain now (422, 409 and the token).

DASHBOARD_SCREENSHOT=docs/images/dashboard.png writes a screenshot of the dashboard with two weeks
of predictions (test_every_chart_is_drawn_under_the_csp); SCREENSHOTS=<folder> writes the per-day
chart's screenshots there (dashboard-per-day-<n>-days.png).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
import time
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect
from sqlalchemy import update

from catdog.registry import ModelRegistry
from feedback.retraining.config import TrainingConfig
from feedback.retraining.launchers.base import Observation
from feedback.store.tables import Prediction, utcnow
from tests.feedback.monitoring.test_dashboard import (
    FakeLauncher,
    fill_data,
    make_registry,
    metrics_text,
    training_config,
)
from tests.feedback_fixtures import (
    FakePredictor,
    feedback_settings,
    photo,
    running_app,
    stub_server,
)

CHARTS = ("chart-per-day", "chart-accuracy", "chart-confidence", "chart-balance", "chart-versions",
          "chart-confusion", "chart-drift", "chart-neither")
WATCH = """window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(`${e.violatedDirective} ${e.sourceFile}:${e.lineNumber}:${e.columnNumber}`));"""


def populate(app, fake: FakePredictor, n: int = 240, days: int = 14) -> None:
    """n predictions over the last `days` days (the older third by v1, the rest by the champion v2,
    a model with an out-of-distribution score that flags 1 in 10), 40 % of them validated, 1 in 8
    of those corrected; half of the flagged ones that were validated people called neither."""
    rng, ood = random.Random(3), random.Random(5)
    now = utcnow()
    for i in range(n):
        fake.version = "1" if i < n // 3 else "2"
        fake.ood = {"method": "energy", "threshold": 5.0} if fake.version == "2" else None
        flagged = fake.ood is not None and ood.random() < 0.1
        fake.flag(photo(1000 + i), 6.0 if flagged else 2.0)
        confidence = round(0.5 + 0.5 * rng.betavariate(4, 1.3), 4)
        cat = confidence if rng.random() < 0.55 else round(1 - confidence, 4)
        fake.answer(photo(1000 + i), {"cat": cat, "dog": round(1 - cat, 4)})
        prediction = app.service.predict(photo(1000 + i))
        if rng.random() < 0.4:
            wrong = rng.random() < 0.125
            other = "dog" if prediction.label == "cat" else "cat"
            neither = flagged and ood.random() < 0.5
            app.service.validate(prediction.id, "neither" if neither else other if wrong else prediction.label)
        with app.service.db.writing() as session:
            at = now - timedelta(days=days * (n - i) / n, minutes=rng.randint(0, 90))
            session.execute(update(Prediction).where(Prediction.id == prediction.id).values(created_at=at))


@pytest.fixture
def dashboard_app(tmp_path):
    """The app with a registry of three versions, predictions, a fake launcher and a predictor /metrics."""
    registry = make_registry(tmp_path)
    launcher = FakeLauncher()
    fake = FakePredictor("2")
    latencies = [0.004 + 0.001 * (i % 9) for i in range(200)] + [0.04, 0.08]
    with stub_server(lambda *_: (200, {"content-type": "text/plain"}, metrics_text(latencies, 202).encode())) as url:
        settings = feedback_settings(tmp_path, url, run_poll_interval_s=0.2)
        with running_app(settings, predictor=fake, training=training_config(tmp_path, registry),
                         launchers={"local": launcher}) as app:
            populate(app, fake)
            yield app, launcher


def watch(page) -> list[str]:
    """Console errors, page errors and CSP violations (read __csp at the end), and foreign hosts."""
    problems: list[str] = []
    page.add_init_script(WATCH)
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    return problems


def assert_clean(page, problems: list[str], app_url: str, hosts: set[str]) -> None:
    assert problems == [] and page.evaluate("window.__csp") == []
    assert hosts == {urlsplit(app_url).netloc}  # plotly.js too comes from the app


def record_hosts(page) -> set[str]:
    hosts: set[str] = set()
    page.on("request", lambda request: hosts.add(urlsplit(request.url).netloc))
    return hosts


DATE_TICK = re.compile(r"^[A-Z][a-z]{2} \d{2}$")  # "Dec 04": the per-day chart's tickformat %b %d


def tick_labels(page, chart: str, axis: str) -> list[str]:
    return page.get_by_test_id(chart).locator(f".{axis}tick text").all_text_contents()


def assert_day_ticks(page, last_date: str) -> None:
    """The per-day chart's x ticks are distinct dates, the last day's among them (daily or weekly ticks,
    up to 70 days); its y ticks whole counts."""
    labels = tick_labels(page, "chart-per-day", "x")
    assert labels and all(DATE_TICK.match(label) for label in labels), labels
    assert len(set(labels)) == len(labels) <= 15, labels
    assert date.fromisoformat(last_date).strftime("%b %d") in labels, labels
    assert all(label.isdigit() for label in tick_labels(page, "chart-per-day", "y"))


def wait_for_state(app, run_id: str, state: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while app.get(f"/api/runs/{run_id}").json()["state"] != state:
        assert time.monotonic() < deadline, f"run {run_id} never became {state}"
        time.sleep(0.1)


def test_every_chart_is_drawn_under_the_csp(dashboard_app, page):
    app, launcher = dashboard_app
    launcher.observation = Observation("succeeded", None, 6, "challenger accuracy 0.9100 beats champion 0.8000",
                                       {"promoted": True, "challenger_version": 2, "champion_version": 2})
    wait_for_state(app, app.post("/api/retrain", json={}).json()["id"], "succeeded")
    launcher.observation = Observation("running", "train", 2)
    app.post("/api/retrain", json={})
    problems, hosts = watch(page), record_hosts(page)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(app.url + "/dashboard")
    for chart in CHARTS:
        expect(page.get_by_test_id(chart).locator(".main-svg").first).to_be_attached()
    data = app.get("/api/dashboard").json()
    expect(page.get_by_test_id("champion-version")).to_have_text(str(data["champion"]["version"]))
    expect(page.get_by_test_id("champion-metrics")).to_contain_text(f"{data['champion']['metrics']['accuracy']:.4f}")
    expect(page.get_by_test_id("version-row")).to_have_count(len(data["versions"]))
    expect(page.get_by_test_id("drift-status")).to_have_text(data["drift"]["status"])
    expect(page.get_by_test_id("latency-p50")).to_have_text(f"{1000 * data['predictor']['p50_s']:.1f} ms")
    accuracy = page.get_by_test_id("accuracy-row")
    expect(accuracy).to_have_count(len(data["validated_accuracy"]))
    for i, shown in enumerate(data["validated_accuracy"]):
        expect(accuracy.nth(i)).to_contain_text(f"{shown['n']}{100 * shown['accuracy']:.1f}%")
    neither = page.get_by_test_id("neither-row")
    expect(neither).to_have_count(len(data["neither"]))
    for i, shown in enumerate(data["neither"]):  # the shares' counts (JS and Python round halves apart)
        flagged = "–" if shown["flagged_share"] is None else f"% ({shown['flagged']} of {shown['scored']})"
        expect(neither.nth(i)).to_contain_text(f"{flagged}{shown['validated']}")
        expect(neither.nth(i)).to_contain_text(f"% ({shown['neither']} of {shown['validated']}){shown['flagged_neither']}")
    assert [r["model_version"] for r in data["neither"]] == ["1", "2"] and data["neither"][1]["flagged"] > 0
    assert data["neither"][1]["neither"] > 0 and data["neither"][0]["flagged_share"] is None
    runs = page.get_by_test_id("run-row")
    expect(runs).to_have_count(2)
    expect(runs.nth(0)).to_contain_text("step 3/7: train")
    expect(runs.nth(1)).to_have_attribute("data-state", "succeeded")
    expect(runs.nth(1)).to_contain_text("v2")
    bars = page.get_by_test_id("chart-per-day").locator(".point")
    expect(bars).to_have_count(len(data["predictions_per_day"]))
    assert_day_ticks(page, data["predictions_per_day"][-1]["date"])
    assert all(label.isdigit() for label in tick_labels(page, "chart-confidence", "y"))  # counts: no 0.5
    # plotly.js put its rules into the page's own stylesheet, not into a <style> element
    rules = page.evaluate("""() => [...document.getElementById('plotly.js-style-global').sheet.cssRules]
                                    .map((r) => r.selectorText).filter((s) => s && s.includes('.js-plotly-plot'))""")
    assert rules and page.locator("style").count() == 0
    bars.last.scroll_into_view_if_needed()
    box = bars.last.bounding_box()  # plotly's drag layer over the bars takes the pointer: move the mouse there
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    expect(page.get_by_test_id("chart-per-day").locator(".hovertext")).to_contain_text(
        f"{data['predictions_per_day'][-1]['count']} predictions")
    if os.environ.get("DASHBOARD_SCREENSHOT"):
        page.wait_for_timeout(500)
        page.screenshot(path=os.environ["DASHBOARD_SCREENSHOT"], full_page=True)
    assert_clean(page, problems, app.url, hosts)


@pytest.mark.parametrize("days", [1, 60])
def test_the_per_day_axis_reads_dates(days, page, tmp_path):
    """One day of predictions (a new user's first) and two months: date ticks, never times of day."""
    training = training_config(tmp_path, ModelRegistry(tmp_path / "registry"))
    fake = FakePredictor()
    with running_app(feedback_settings(tmp_path, "http://127.0.0.1:9"), predictor=fake, training=training,
                     launchers={"local": FakeLauncher()}) as app:
        if days == 1:
            for seed in range(3):
                app.service.predict(photo(seed))
        else:
            populate(app, fake, n=30, days=days)
        per_day = app.get("/api/dashboard").json()["predictions_per_day"]
        problems = watch(page)
        page.goto(app.url + "/dashboard")
        expect(page.get_by_test_id("chart-per-day").locator(".point")).to_have_count(len(per_day))
        assert_day_ticks(page, per_day[-1]["date"])
        if os.environ.get("SCREENSHOTS"):
            page.get_by_test_id("chart-per-day").screenshot(
                path=Path(os.environ["SCREENSHOTS"]) / f"dashboard-per-day-{days}-days.png")
        assert problems == [] and page.evaluate("window.__csp") == []


def test_the_runs_table_stop_and_retrain(dashboard_app, page, tmp_path):
    app, launcher = dashboard_app
    problems, hosts = watch(page), record_hosts(page)
    started = app.post("/api/retrain", json={})
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]
    page.goto(app.url + "/dashboard")
    row = page.locator(f'[data-testid=run-row][data-run-id="{run_id}"]')
    expect(row).to_have_attribute("data-state", "running")
    expect(row).to_contain_text("step 3/7: train")  # the launcher says: 2 steps done, train running
    expect(page.get_by_test_id("retrain")).to_be_disabled()

    row.get_by_test_id("stop-run").click()
    expect(row).to_have_attribute("data-state", "cancelled")
    assert launcher.cancelled == {run_id}
    expect(page.get_by_test_id("retrain")).to_be_enabled()

    data = tmp_path / "data"
    shutil.rmtree(data)  # the target's DATA is gone: the app refuses the run with 422
    page.get_by_test_id("retrain").click()
    expect(page.get_by_test_id("retrain-error")).to_contain_text("does not exist")
    fill_data(data)

    with page.expect_request("**/api/retrain") as posted:
        page.get_by_test_id("retrain").click()
    assert json.loads(posted.value.post_data) == {"target": "local", "parameters": {}}
    expect(page.get_by_test_id("run-row")).to_have_count(2)
    expect(page.get_by_test_id("run-row").first).to_have_attribute("data-state", "running")
    expect(page.get_by_test_id("retrain-error")).to_be_hidden()
    assert len(launcher.started) == 2

    # a run started elsewhere that this page has not seen yet: the answer is 409, shown as such
    page.route("**/api/runs?limit=20", lambda route: route.fulfill(json={"runs": [], "active": None}))
    page.reload()
    page.get_by_test_id("retrain").click()
    expect(page.get_by_test_id("retrain-error")).to_contain_text("Not started: a training run is already active")
    page.unroute("**/api/runs?limit=20")
    assert len(launcher.started) == 2
    assert_clean(page, [p for p in problems if "409" not in p and "422" not in p], app.url, hosts)


def test_with_a_token_and_two_targets(page, tmp_path):
    registry = make_registry(tmp_path)
    local = training_config(tmp_path, registry).default
    training = TrainingConfig({"local": local, "vertex": dataclasses.replace(local, name="vertex")})
    launcher = FakeLauncher()
    settings = feedback_settings(tmp_path, "http://127.0.0.1:9", app_token="dash-token-1", run_poll_interval_s=0.2)
    with running_app(settings, predictor=FakePredictor("2"), training=training,
                     launchers={"local": launcher, "vertex": launcher}) as app:
        problems = watch(page)
        page.goto(app.url + "/dashboard")
        page.get_by_test_id("retrain-target").select_option("vertex")
        with page.expect_request("**/api/retrain") as posted:
            page.get_by_test_id("retrain").click()
            page.get_by_test_id("token-dialog").wait_for(state="visible")
            page.get_by_test_id("token-input").fill("dash-token-1")
            page.get_by_test_id("token-submit").click()
        assert posted.value.headers["authorization"] == "Bearer dash-token-1"
        expect(page.get_by_test_id("run-row")).to_have_count(1)
        expect(page.get_by_test_id("run-row").first).to_contain_text("vertex")
        assert [target for _, target in launcher.started] == ["vertex"]
        page.get_by_test_id("stop-run").click()  # the token is kept: no second prompt
        expect(page.get_by_test_id("run-row").first).to_have_attribute("data-state", "cancelled")
        expect(page.get_by_test_id("token-dialog")).to_be_hidden()
    assert problems == [] and page.evaluate("window.__csp") == []


def test_an_empty_dashboard_says_what_is_missing(page, tmp_path):
    training = training_config(tmp_path, ModelRegistry(tmp_path / "registry"))  # no version, no champion
    settings = feedback_settings(tmp_path, "http://127.0.0.1:9")
    with running_app(settings, predictor=FakePredictor(), training=training, launchers={"local": FakeLauncher()}) as app:
        problems = watch(page)
        page.goto(app.url + "/dashboard")
        expect(page.get_by_test_id("champion-none")).to_be_visible()
        expect(page.get_by_test_id("runs-empty")).to_be_visible()
        expect(page.get_by_test_id("versions-empty")).to_be_visible()
        expect(page.get_by_test_id("drift-status")).to_have_text("not enough data")
        expect(page.get_by_test_id("latency-p50")).to_have_text("unavailable")
        expect(page.get_by_test_id("predictor-note")).to_contain_text("did not answer")
        for chart in CHARTS:
            expect(page.get_by_test_id(chart).locator(".empty")).to_be_visible()
        assert problems == [] and page.evaluate("window.__csp") == []
