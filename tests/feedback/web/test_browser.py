"""The page in a real browser (Playwright driving Debian's Chromium, headless) against the app and
the real predictor on loopback: upload photos, see labels, confirm one, correct another, watch the
review queue shrink; the heat map (kept through a verdict), the token prompt, escaping, and that
nothing leaves the origin; a photo the model flags as maybe neither, and the verdict "neither".
SCREENSHOTS=<folder> writes upload-confirmed-heatmap.png and neither-card.png there."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.feedback_fixtures import FakePredictor, app, feedback_settings, photo, predictor, running_app  # noqa: F401

LABELS = ("cat", "dog")


def photo_files(tmp_path, seeds, prefix="photo"):
    files = []
    for seed in seeds:
        path = tmp_path / f"{prefix}-{seed}.jpg"
        path.write_bytes(photo(seed))
        files.append(str(path))
    return files


def record_hosts(page) -> set[str]:
    hosts: set[str] = set()
    page.on("request", lambda request: hosts.add(urlsplit(request.url).netloc))
    return hosts


def upload(page, files) -> None:
    page.get_by_test_id("photo-input").set_input_files(files)
    expect(page.get_by_test_id("prediction")).to_have_count(len(files))


def test_upload_confirm_correct_and_the_queue_shrinks(app, page, tmp_path):
    hosts = record_hosts(page)
    page.goto(app.url + "/")
    upload(page, photo_files(tmp_path, [1, 2, 3]))
    cards = page.get_by_test_id("prediction")
    assert cards.count() == 3
    labels = [cards.nth(i).get_by_test_id("prediction-label").text_content().strip() for i in range(3)]
    assert set(labels) <= set(LABELS)
    for i in range(3):  # both probabilities on every card
        text = cards.nth(i).inner_text()
        assert re.search(r"cat\s+[\d.]+%", text) and re.search(r"dog\s+[\d.]+%", text)
    expect(page.get_by_test_id("nav-queue-count")).to_have_text("3")

    first = cards.nth(0)
    first_label = labels[0]
    first.get_by_test_id("confirm").click()
    expect(cards.nth(0)).to_have_attribute("data-status", "confirmed")
    expect(cards.nth(0).get_by_test_id("prediction-status")).to_have_text(f"Confirmed: {first_label}")

    second_label = labels[1]
    other = "dog" if second_label == "cat" else "cat"
    cards.nth(1).get_by_test_id(f"correct-{other}").click()
    expect(cards.nth(1)).to_have_attribute("data-status", "corrected")
    expect(cards.nth(1).get_by_test_id("prediction-status")).to_have_text(f"Corrected: {other}")
    expect(page.get_by_test_id("nav-queue-count")).to_have_text("1")

    page.goto(app.url + "/review")
    queue = page.get_by_test_id("review-queue").get_by_test_id("prediction")
    assert queue.count() == 1 and page.get_by_test_id("queue-count").inner_text() == "1"
    remaining = queue.nth(0)
    remaining.get_by_test_id("confirm").click()
    expect(queue).to_have_count(0)
    expect(page.get_by_test_id("queue-count")).to_have_text("0")
    expect(page.get_by_test_id("queue-empty")).to_be_visible()

    # what the browser did is what the store holds
    counts = app.get("/api/status").json()["counts"]
    assert (counts["confirmed"], counts["corrected"], counts["unvalidated"]) == (2, 1, 0)
    assert hosts == {urlsplit(app.url).netloc}  # every script, style and image came from the app


def test_the_review_queue_puts_the_least_confident_first(app, page, tmp_path):
    confidences = [app.predict(photo(seed)).json()["confidence"] for seed in (10, 11, 12, 13)]
    page.goto(app.url + "/review")
    cards = page.get_by_test_id("prediction")
    shown = [float(cards.nth(i).locator(".confidence").inner_text().rstrip("%")) / 100 for i in range(cards.count())]
    assert shown == pytest.approx(sorted(confidences), abs=1e-4)


def test_the_heat_map_toggles_over_the_photo(app, page, tmp_path):
    page.goto(app.url + "/")
    upload(page, photo_files(tmp_path, [20]))
    card = page.get_by_test_id("prediction").nth(0)
    heatmap = card.get_by_test_id("heatmap")
    assert heatmap.is_hidden()
    card.get_by_test_id("toggle-heatmap").click()
    heatmap.wait_for(state="visible")
    painted = page.evaluate("""() => {
        const canvas = document.querySelector('[data-testid=heatmap]');
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let alpha = 0; for (let i = 3; i < data.length; i += 4) alpha += data[i];
        return {width: canvas.width, alpha};
    }""")
    assert painted["width"] == 64 and painted["alpha"] > 0  # drawn at the photo's size, not blank
    card.get_by_test_id("toggle-heatmap").click()
    heatmap.wait_for(state="hidden")


def painted_alpha(card) -> float:
    """The summed alpha of a card's heat map canvas (0: nothing drawn)."""
    return card.get_by_test_id("heatmap").evaluate("""(canvas) => {
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let alpha = 0; for (let i = 3; i < data.length; i += 4) alpha += data[i];
        return alpha;
    }""")


def test_a_verdict_keeps_the_heat_map_on_the_card(app, page, tmp_path):
    page.goto(app.url + "/")
    upload(page, photo_files(tmp_path, [22]))  # a blue photo: the heat map (red at its peak) shows
    card = page.get_by_test_id("prediction").nth(0)
    toggle = card.get_by_test_id("toggle-heatmap")
    toggle.click()
    expect(card.get_by_test_id("heatmap")).to_be_visible()
    label = card.get_by_test_id("prediction-label").text_content().strip()

    card.get_by_test_id("confirm").click()
    expect(card).to_have_attribute("data-status", "confirmed")  # the card was re-rendered with its verdict
    expect(card.get_by_test_id("heatmap")).to_be_visible()
    expect(toggle).to_have_attribute("aria-pressed", "true")
    assert painted_alpha(card) > 0
    if os.environ.get("SCREENSHOTS"):
        page.screenshot(path=Path(os.environ["SCREENSHOTS"]) / "upload-confirmed-heatmap.png", full_page=True)

    other = "dog" if label == "cat" else "cat"
    card.get_by_test_id(f"correct-{other}").click()
    expect(card).to_have_attribute("data-status", "corrected")
    expect(card.get_by_test_id("heatmap")).to_be_visible()
    assert painted_alpha(card) > 0
    toggle.click()  # the toggle still works on the new card
    expect(card.get_by_test_id("heatmap")).to_be_hidden()
    expect(toggle).to_have_attribute("aria-pressed", "false")


def test_history_filters_by_status(app, page, tmp_path):
    bodies = [app.predict(photo(seed)).json() for seed in (30, 31)]
    app.validate(bodies[0]["id"], bodies[0]["predicted_class"])
    page.goto(app.url + "/history")
    assert page.get_by_test_id("prediction").count() == 2
    page.get_by_test_id("filter-status").select_option("confirmed")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"status=confirmed"))
    assert page.get_by_test_id("prediction").count() == 1
    assert page.get_by_test_id("prediction").nth(0).get_attribute("data-prediction-id") == bodies[0]["id"]


def test_with_a_token_the_page_asks_for_it_once(page, tmp_path, predictor):
    """...and for the reviewer's name once (with APP_TOKEN every verdict names who gave it)."""
    settings = feedback_settings(tmp_path, predictor.url, app_token="page-token-123")
    with running_app(settings) as guarded:
        ids = [guarded.predict(photo(seed)).json()["id"] for seed in (40, 41)]
        page.goto(guarded.url + "/review")
        expect(page.get_by_test_id("reviewer-name")).to_have_attribute("placeholder", "required for verdicts")
        page.get_by_test_id("prediction").nth(0).get_by_test_id("confirm").click()
        page.get_by_test_id("name-dialog").wait_for(state="visible")
        page.get_by_test_id("name-input").fill("  Ana ")
        page.get_by_test_id("name-submit").click()
        expect(page.get_by_test_id("reviewer-name")).to_have_value("Ana")
        dialog = page.get_by_test_id("token-dialog")
        dialog.wait_for(state="visible")
        page.get_by_test_id("token-input").fill("page-token-123")
        page.get_by_test_id("token-submit").click()
        queue = page.get_by_test_id("review-queue").get_by_test_id("prediction")
        expect(queue).to_have_count(1)
        queue.nth(0).get_by_test_id("confirm").click()  # no second prompt
        expect(queue).to_have_count(0)
        expect(dialog).to_be_hidden()
        expect(page.get_by_test_id("name-dialog")).to_be_hidden()
        assert all(guarded.get(f"/api/predictions/{i}").json()["status"] == "confirmed" for i in ids)
        assert [guarded.get(f"/api/predictions/{i}").json()["validations"][0]["by"] for i in ids] == ["Ana", "Ana"]
        assert page.evaluate("localStorage.getItem('catdog-feedback-name')") == "Ana"


def test_a_file_name_with_markup_is_shown_as_text(app, page, tmp_path):
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    path = tmp_path / '<img src=x onerror=alert(1)>.jpg'
    path.write_bytes(photo(50))
    page.goto(app.url + "/")
    upload(page, [str(path)])
    expect(page.get_by_test_id("prediction").nth(0)).to_contain_text("<img src=x onerror=alert(1)>.jpg")
    assert dialogs == [] and page.locator("img[src=x]").count() == 0


def test_a_bad_file_shows_the_reason(app, page, tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not a photo")
    page.goto(app.url + "/")
    page.get_by_test_id("photo-input").set_input_files(str(path))
    expect(page.get_by_test_id("upload-error")).to_contain_text("not a decodable image")


def test_photos_dropped_on_the_page_are_uploaded(app, page):
    import base64
    import hashlib

    page.goto(app.url + "/")
    files = page.evaluate_handle("""(photos) => {
        const transfer = new DataTransfer();
        photos.forEach((b64, i) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            transfer.items.add(new File([bytes], `dropped-${i}.jpg`, {type: "image/jpeg"}));
        });
        return transfer;
    }""", [base64.b64encode(photo(seed)).decode() for seed in (60, 61)])
    page.get_by_test_id("dropzone").dispatch_event("drop", {"dataTransfer": files})
    expect(page.get_by_test_id("prediction")).to_have_count(2)
    stored = app.get("/api/predictions").json()["predictions"]
    assert {p["photo"]["sha256"] for p in stored} == {hashlib.sha256(photo(s)).hexdigest() for s in (60, 61)}


def test_a_flagged_photo_says_it_may_be_neither_and_a_person_records_neither(page, tmp_path):
    fake = FakePredictor("5", ood={"method": "energy", "threshold": 5.0})
    (flagged_file,) = photo_files(tmp_path, [41], prefix="rocket")
    fake.answer(photo(41), {"cat": 0.07, "dog": 0.93})
    fake.flag(photo(41), 8.75)
    with running_app(feedback_settings(tmp_path, "http://127.0.0.1:9"), predictor=fake) as flagged_app:
        page.goto(flagged_app.url + "/")
        upload(page, [flagged_file])
        card = page.get_by_test_id("prediction")
        warning = card.get_by_test_id("ood-warning")
        expect(warning).to_be_visible()
        expect(warning).to_contain_text("This may be neither a cat nor a dog.")
        expect(warning).to_contain_text("score is 8.75 (threshold 5)")
        expect(card.get_by_test_id("prediction-label")).to_have_text("dog")  # the answer stays shown
        expect(card.get_by_test_id("probability-dog")).to_have_text("93.00%")
        expect(card.get_by_test_id("probability-cat")).to_have_text("7.00%")

        card.get_by_test_id("verdict-neither").click()
        expect(card).to_have_attribute("data-status", "neither")
        expect(card.get_by_test_id("prediction-status")).to_have_text("Neither a cat nor a dog: kept out of the dataset")
        expect(card.get_by_test_id("verdict-neither")).to_have_attribute("aria-pressed", "true")
        expect(card.get_by_test_id("ood-warning")).to_be_visible()
        expect(page.get_by_test_id("nav-queue-count")).to_have_text("0")
        if os.environ.get("SCREENSHOTS"):
            page.screenshot(path=Path(os.environ["SCREENSHOTS"]) / "neither-card.png", full_page=True)

        page.goto(flagged_app.url + "/history")
        page.get_by_test_id("filter-status").select_option("neither")
        page.get_by_role("button", name="Filter").click()
        expect(page.get_by_test_id("history").get_by_test_id("prediction")).to_have_count(1)
        expect(page.get_by_test_id("prediction")).to_have_attribute("data-status", "neither")
        assert flagged_app.service.photos.dataset_files() == {"cat": [], "dog": []}
