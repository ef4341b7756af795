"""The review page's orders in Chromium: every order is a link, and the diverse order shows the
least confident photos spread over the model's embedding (a stand-in predictor that answers
embeddings), the farthest from the judged photo first. SCREENSHOTS=<folder> writes review-diverse.png."""

from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import expect

from feedback.settings import REVIEW_ORDERS
from tests.feedback_fixtures import FakePredictor, feedback_settings, photo, running_app


def test_the_order_links_and_the_diverse_order_on_screen(page, tmp_path):
    fake = FakePredictor("7")
    # near (0, 0), where a judged photo sits, two near-copies at (10, 0), one at (0, 10)
    places = {80: (0, 0), 81: (0.1, 0), 82: (10, 0), 83: (9.9, 0), 84: (0, 10)}
    confidences = {80: 0.51, 81: 0.52, 82: 0.6, 83: 0.55, 84: 0.7}
    for seed, place in places.items():
        fake.embed(photo(seed), place)
        fake.answer(photo(seed), {"cat": confidences[seed], "dog": 1 - confidences[seed]})
    with running_app(feedback_settings(tmp_path, "http://127.0.0.1:9"), predictor=fake) as app:
        ids = {seed: app.predict(photo(seed), name=f"photo-{seed}.jpg").json()["id"] for seed in places}
        assert app.validate(ids[80], "cat", by="ana").status_code == 201
        page.goto(app.url + "/review")
        orders = page.get_by_test_id("queue-orders")
        for name in REVIEW_ORDERS:
            if name != "least_confident":  # the current one is bold text, not a link
                expect(orders.locator(f'a[href="/review?order={name}"]')).to_have_count(1)
        expect(page.get_by_test_id("queue-order")).to_have_attribute("data-order", "least_confident")
        cards = page.get_by_test_id("review-queue").get_by_test_id("prediction")
        expect(cards).to_have_count(4)
        least_confident = [cards.nth(i).get_attribute("data-prediction-id") for i in range(4)]
        assert least_confident == [ids[81], ids[83], ids[82], ids[84]]

        orders.get_by_role("link", name="diverse").click()
        expect(page).to_have_url(app.url + "/review?order=diverse")
        expect(page.get_by_test_id("queue-order")).to_contain_text("least confident, spread over what the photos show")
        expect(orders.locator("strong[aria-current]")).to_have_text("diverse")
        expect(cards).to_have_count(4)
        shown = [cards.nth(i).get_attribute("data-prediction-id") for i in range(4)]
        # (10, 0) first (farthest from the judged (0, 0)), then (0, 10); the near-copy (9.9, 0) and the
        # photo next to the judged one last
        assert shown[:2] == [ids[82], ids[84]] and set(shown[2:]) == {ids[81], ids[83]}
        if os.environ.get("SCREENSHOTS"):
            page.screenshot(path=Path(os.environ["SCREENSHOTS"]) / "review-diverse.png", full_page=True)
