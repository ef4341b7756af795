"""Agreement between reviewers (feedback/monitoring/agreement.py): Krippendorff's alpha (nominal)
checked against a textbook example and a small one computed by hand, pairwise percent agreement,
each reviewer's agreement with the consensus, contested and unresolved photos, and the plain
"too few" and "undefined" answers."""

from __future__ import annotations

import pytest

from feedback.monitoring.agreement import ALPHA_MIN_PHOTOS, agreement


def _votes(table: dict[str, list]) -> list[tuple[str, str, str]]:
    """reviewer -> verdict per photo (None: not judged) as (photo, reviewer, verdict) triples."""
    return [(f"photo{j}", reviewer, str(value)) for reviewer, values in table.items()
            for j, value in enumerate(values) if value is not None]


def test_alpha_of_krippendorffs_textbook_example():
    """Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: four observers, twelve
    units, values 1-5 with missing data; nominal alpha = 0.743 (photo 11 has one value: not pairable)."""
    table = {"A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
             "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
             "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
             "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]}
    result = agreement(_votes(table))
    assert result["alpha"] == pytest.approx(0.743, abs=5e-4) and result["alpha_note"] is None
    assert result["shared_photos"] == 11 and result["photos"] == 12


def test_alpha_and_percent_agreement_computed_by_hand():
    """Two reviewers, five photos: (cat, cat), (dog, dog), (cat, dog), (dog, dog), (neither, neither).
    Coincidences (each photo's ordered pairs): cat-cat 2, dog-dog 4, neither-neither 2, cat-dog 1, dog-cat 1;
    n = 10, n_cat = 3, n_dog = 5, n_neither = 2. D_o = 2 / 10; D_e = (sum over c != k of n_c n_k) / (n (n - 1))
    = 2 (3*5 + 3*2 + 5*2) / 90 = 62 / 90. alpha = 1 - (2/10) / (62/90) = 1 - 18/62 = 44/62."""
    votes = [("p1", "ana", "cat"), ("p1", "ben", "cat"), ("p2", "ana", "dog"), ("p2", "ben", "dog"),
             ("p3", "ana", "cat"), ("p3", "ben", "dog"), ("p4", "ana", "dog"), ("p4", "ben", "dog"),
             ("p5", "ana", "neither"), ("p5", "ben", "neither")]
    result = agreement(votes)
    assert result["alpha"] == pytest.approx(44 / 62)
    assert (result["pairs"], result["percent_agreement"]) == (5, pytest.approx(4 / 5))
    assert (result["contested"], result["unresolved"]) == (1, 1)  # p3: a tie
    # p3 has no consensus: nobody is compared on it
    assert [(r["reviewer"], r["judged"], r["compared"], r["agreed"], r["agreement"]) for r in result["reviewers"]] == [
        ("ana", 5, 4, 4, 1.0), ("ben", 5, 4, 4, 1.0)]


def test_latest_verdict_per_person_and_agreement_with_the_consensus():
    votes = [("p1", "ana", "dog"), ("p1", "ana", "cat"),  # ana changed her mind: cat counts
             ("p1", "ben", "cat"), ("p1", "cy", "dog"),   # p1: cat 2 : dog 1
             ("p2", "ana", "cat"), ("p2", "ben", "cat"), ("p2", "cy", "cat"),
             ("p3", "cy", "dog")]                          # one reviewer: not shared, not compared
    result = agreement(votes)
    assert (result["photos"], result["shared_photos"], result["pairs"]) == (3, 2, 6)
    assert result["percent_agreement"] == pytest.approx(4 / 6)  # p1: ana-ben agree; p2: all three pairs
    people = {r["reviewer"]: r for r in result["reviewers"]}
    assert (people["cy"]["judged"], people["cy"]["compared"], people["cy"]["agreed"]) == (3, 2, 1)
    assert people["cy"]["agreement"] == 0.5 and people["ana"]["agreement"] == 1.0
    assert (result["contested"], result["unresolved"]) == (1, 0)


def test_too_few_shared_photos_say_so_plainly():
    votes = [(f"p{i}", who, "cat") for i in range(ALPHA_MIN_PHOTOS - 1) for who in ("ana", "ben")]
    result = agreement(votes)
    assert result["alpha"] is None and result["percent_agreement"] == 1.0
    assert result["alpha_note"] == (f"too few photos with two reviewers to compute Krippendorff's alpha: "
                                    f"{ALPHA_MIN_PHOTOS - 1} (it needs at least {ALPHA_MIN_PHOTOS})")
    empty = agreement([])
    assert (empty["alpha"], empty["percent_agreement"], empty["reviewers"]) == (None, None, [])
    assert empty["alpha_note"].startswith("too few photos with two reviewers")


def test_alpha_is_undefined_when_every_verdict_is_the_same():
    votes = [(f"p{i}", who, "dog") for i in range(ALPHA_MIN_PHOTOS) for who in ("ana", "ben")]
    result = agreement(votes)
    assert result["alpha"] is None and "undefined" in result["alpha_note"] and result["percent_agreement"] == 1.0
