"""Several reviewers in Chromium: the dashboard's "Agreement between reviewers" panel (first with
too few shared photos, said plainly, then alpha, percent agreement and each reviewer's agreement
with the consensus) and the second-opinion queue (its order, why each photo is there, the
remembered name in its link, a verdict taking the photo out). Screenshots under
/work/notes/screens/ (SCREENS=<folder> to change) as reviewers-*.png."""

from __future__ import annotations

import os
import re
from pathlib import Path

from playwright.sync_api import expect

from tests.feedback_fixtures import FakePredictor, feedback_settings, photo, running_app

SCREENS = Path(os.environ.get("SCREENS", "/work/notes/screens"))


def _shot(target, name: str) -> None:
    """A screenshot of a page (whole) or of one element (a Locator)."""
    if SCREENS.parent.exists():
        SCREENS.mkdir(exist_ok=True)
        options = {"full_page": True} if hasattr(target, "goto") else {}
        target.screenshot(path=str(SCREENS / f"reviewers-{name}.png"), **options)


def test_agreement_panel_and_second_opinion_queue(page, tmp_path):
    fake = FakePredictor()
    confidence = {60: 0.9, 61: 0.2, 62: 0.85, 63: 0.3, 64: 0.7, 65: 0.55, 66: 0.95, 67: 0.6}
    for seed, p in confidence.items():
        fake.answer(photo(seed), {"cat": p, "dog": 1 - p})
    with running_app(feedback_settings(tmp_path, "http://127.0.0.1:9"), predictor=fake) as app:
        service = app.service
        ids = {seed: service.predict(photo(seed), f"photo-{seed}.jpg").id for seed in confidence}
        service.validate(ids[64], "cat", by="ana"), service.validate(ids[64], "dog", by="ben")  # a tie

        page.goto(app.url + "/dashboard")
        panel = page.get_by_test_id("agreement-panel")
        expect(panel.get_by_test_id("agreement-alpha-note")).to_have_text(
            "too few photos with two reviewers to compute Krippendorff's alpha: 1 (it needs at least 5)")
        expect(panel.get_by_test_id("agreement-alpha")).to_have_text("–")
        expect(panel.get_by_test_id("agreement-unresolved")).to_have_text("1")
        _shot(panel, "dashboard-too-few")

        for seed, verdicts in {60: [("ana", "cat"), ("ben", "cat"), ("cy", "dog")], 61: [("ana", "dog"), ("Ben", "dog")],
                               62: [("ana", "cat"), ("ben", "cat")], 63: [("ANA", "dog"), ("ben", "dog")],
                               65: [("ana", "cat")], 66: [("ana", "cat")]}.items():
            for who, label in verdicts:
                service.validate(ids[seed], label, by=who)
        page.reload()
        # by hand: coincidences cat-cat 3, dog-dog 4, cat-dog 2, dog-cat 2 (n 11: cat 5, dog 6);
        # alpha = 1 - (4/11) / (2*5*6 / (11*10)) = 1/3; pairs: 60 has 3 (1 agrees), 61-63 agree, 64 not: 4 of 7
        expect(panel.get_by_test_id("agreement-alpha")).to_have_text("0.333")
        expect(panel.get_by_test_id("agreement-alpha-note")).to_be_hidden()
        expect(panel.get_by_test_id("agreement-percent")).to_have_text("57.1% of 7 pairs")
        expect(panel.get_by_test_id("agreement-shared")).to_have_text("5 of 7")
        expect(panel.get_by_test_id("agreement-contested")).to_have_text("2")
        expect(panel.get_by_test_id("agreement-unresolved")).to_have_text("1")
        rows = panel.get_by_test_id("agreement-row")
        expect(rows).to_have_count(3)
        expect(rows.nth(0)).to_have_text(re.compile(r"^ana\s*7\s*100\.0% \(4 of 4\)$"))
        expect(rows.nth(1)).to_have_text(re.compile(r"^ben\s*5\s*100\.0% \(4 of 4\)$"))
        expect(rows.nth(2)).to_have_text(re.compile(r"^cy\s*1\s*0\.0% \(0 of 1\)$"))
        _shot(panel, "dashboard-agreement")

        # the second-opinion queue for someone who judged none: the tie, the contested photo, the unsure one
        page.goto(app.url + "/review")
        page.get_by_test_id("reviewer-name").fill("Dee")
        page.get_by_test_id("reviewer-name").dispatch_event("change")
        expect(page.get_by_test_id("tab-second-opinion")).to_have_attribute("href", "/review?queue=second-opinion&by=Dee")
        page.get_by_test_id("tab-second-opinion").click()
        page.wait_for_url(re.compile(r"queue=second-opinion&by=Dee"))
        expect(page.get_by_test_id("second-opinion-count")).to_have_text("3")
        cards = page.get_by_test_id("review-queue").get_by_test_id("prediction")
        expect(cards).to_have_count(3)
        assert [cards.nth(i).get_attribute("data-prediction-id") for i in range(3)] == [ids[64], ids[60], ids[65]]
        expect(cards.nth(0).get_by_test_id("second-opinion-reason")).to_have_text("Reviewers tie (2 so far).")
        expect(cards.nth(0).get_by_test_id("prediction-status")).to_contain_text("Unresolved: its 2 reviewers tie")
        expect(cards.nth(1).get_by_test_id("second-opinion-reason")).to_have_text("Reviewers disagree (3 so far).")
        expect(cards.nth(2).get_by_test_id("second-opinion-reason")).to_have_text("One reviewer so far, and the model was unsure.")
        _shot(page, "second-opinion")
        cards.nth(0).get_by_test_id("correct-dog").click()  # Dee breaks the tie
        expect(cards).to_have_count(2)
        expect(page.get_by_test_id("second-opinion-count")).to_have_text("2")
        detail = app.get(f"/api/predictions/{ids[64]}").json()
        assert (detail["validated_label"], detail["status"], detail["validations"][-1]["by"]) == ("dog", "corrected", "Dee")

        # opened without a name, the page uses the one it remembers; Ana judged them all
        page.get_by_test_id("reviewer-name").fill("ana")
        page.get_by_test_id("reviewer-name").dispatch_event("change")
        page.goto(app.url + "/review?queue=second-opinion")
        page.wait_for_url(re.compile(r"by=ana"))
        expect(page.get_by_test_id("queue-empty")).to_be_visible()
        expect(page.get_by_test_id("queue-empty")).to_contain_text("No photo needs a second opinion from ana")
        expect(page.get_by_test_id("second-opinion-count")).to_have_text("0")
