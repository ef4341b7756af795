"""The review queue in Chromium shows a training photo whose label may be wrong with the same card,
heat map and buttons as an upload, plus its given label, out-of-sample probability and reasons (a
near-duplicate beside its partner); clicking a verdict records it as a label override."""

from __future__ import annotations

import json
import os
from pathlib import Path

from playwright.sync_api import expect

from feedback.retraining.config import parse_training_words
from feedback.store import queries
from tests.feedback.labelling.test_training_photos import champion_with_suspects, entry, sha
from tests.feedback.web.test_browser import painted_alpha
from tests.feedback_fixtures import feedback_settings, photo, predictor, running_app  # noqa: F401 (fixture)

A, B, C = photo(91), photo(92), photo(93)


def shoot(page, name: str) -> None:
    if os.environ.get("SCREENSHOTS"):
        page.screenshot(path=Path(os.environ["SCREENSHOTS"]) / f"suspects-{name}.png", full_page=True)


def test_the_queue_shows_a_training_photo_and_a_verdict_becomes_an_override(page, tmp_path, predictor):  # noqa: F811
    registry = tmp_path / "registry"
    champion_with_suspects(registry, 3, "run-42", [
        (A, entry(A, "cat", 0.04)),
        (B, entry(B, "dog", 0.45, ("near-duplicate",), [{"sha256": sha(C), "similarity": 0.98, "label": "cat"}])),
        (C, entry(C, "cat", 0.55, ("near-duplicate",), [{"sha256": sha(B), "similarity": 0.98, "label": "dog"}])),
    ])
    training = parse_training_words([f"REGISTRY={registry}"], str(tmp_path / "store"))
    with running_app(feedback_settings(tmp_path, predictor.url), training=training) as app:
        page.goto(app.url + "/review?order=training_suspects_first")
        cards = page.locator("[data-testid=prediction][data-kind=training]")
        expect(cards).to_have_count(3)
        card = cards.nth(0)  # the lowest out-of-sample probability of its given label first
        note = card.get_by_test_id("training-note")
        expect(note).to_contain_text("Training photo: its label may be wrong.")
        expect(card.get_by_test_id("given-label")).to_have_text("Given label: cat")
        # the answer line says the 4 % is the given label's out-of-sample probability, not a model's answer
        expect(card.locator(".answer")).to_contain_text("given label, 4.00% out of sample")
        expect(card.get_by_test_id("oos-probability")).to_contain_text("out-of-sample probability of cat: 4.0%")
        expect(card.get_by_test_id("training-reasons")).to_contain_text("the model trained without it says another label")
        expect(card.get_by_test_id("training-source")).to_contain_text("flagged by run run-42")
        expect(card.get_by_test_id("confirm")).to_have_text("Keep cat")
        expect(card.get_by_test_id("correct-dog")).to_be_visible()
        expect(card.get_by_test_id("verdict-neither")).to_be_visible()
        card.get_by_test_id("toggle-heatmap").click()  # the served model's heat map, as for an upload
        expect(card.get_by_test_id("heatmap")).to_be_visible()
        assert painted_alpha(card) > 0
        pair = cards.nth(1).get_by_test_id("duplicate-pair")
        expect(pair).to_contain_text("near-duplicate labelled cat (similarity 0.98)")
        expect(pair.locator("img")).to_be_visible()
        assert pair.locator("img").evaluate("img => img.naturalWidth") > 0  # the partner's photo loaded
        shoot(page, "queue")

        card_id = card.get_attribute("data-prediction-id")
        card.get_by_test_id("correct-dog").click()
        expect(page.locator(f"[data-prediction-id='{card_id}']")).to_have_count(0)  # judged: out of the queue
        expect(cards).to_have_count(2)
        page.goto(app.url + "/history")  # where it is now, with its verdict
        judged = page.locator(f"[data-prediction-id='{card_id}']")
        expect(judged).to_have_attribute("data-status", "corrected")
        expect(judged.get_by_test_id("prediction-status")).to_have_text("Corrected: dog")
        expect(judged.get_by_test_id("training-note")).to_be_visible()
        expect(judged.get_by_test_id("correct-dog")).to_have_attribute("aria-pressed", "true")
        shoot(page, "verdict")
        with app.service.db.read() as session:
            [verdict] = queries.validations_of(session, sha(A))
        assert (verdict.label, verdict.source) == ("dog", "page")
        app.service.publisher.flush_manifest(always=True)
        overrides = json.loads((tmp_path / "store" / "label-overrides.json").read_text())["overrides"]
        assert [(o["sha256"], o["given_label"], o["label"], o["flagged_by_run"]) for o in overrides] == [
            (sha(A), "cat", "dog", "run-42")]
        assert app.service.photos.dataset_files() == {"cat": [], "dog": []}
