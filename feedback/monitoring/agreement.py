"""Agreement between reviewers: how far people's verdicts on the same photos agree.

    agreement(votes) -> dict          from (photo, reviewer, verdict) triples, oldest first
    read_agreement(session) -> dict   the same over the store's verdicts (GET /api/dashboard "agreement")

Each reviewer's latest verdict on a photo counts, reviewers and the consensus as in
feedback/labelling/consensus.py ("neither" is a verdict like a label; verdicts without a name are
one reviewer, "anonymous"). Figures, over the photos that at least two reviewers judged ("shared"):
- alpha: Krippendorff's alpha for nominal data (the `krippendorff` package; reviewers x photos,
  missing where a reviewer did not judge a photo). None, with `alpha_note` saying why, when fewer
  than ALPHA_MIN_PHOTOS photos have two reviewers, or when every verdict on them is the same
  verdict (then alpha is undefined: there is no disagreement expected by chance to compare with;
  percent agreement is 100 %).
- percent_agreement: of all pairs of reviewers on the same photo, the share that gave the same
  verdict (pooled over photos: a photo with three reviewers brings three pairs). None without
  shared photos.
- reviewers: per reviewer, photos judged, and over the shared photos that have a consensus
  (no tie), how many they judged ("compared") and how often their latest verdict is the
  consensus ("agreement", None when compared is 0). A photo only they judged is not compared:
  they are its consensus.
- contested: photos whose reviewers' latest verdicts differ; unresolved: of which tied (no label).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import combinations

import krippendorff
import numpy as np
from sqlalchemy.orm import Session

from feedback.labelling.consensus import decide, latest_votes
from feedback.store.consensus_queries import votes as store_votes

ALPHA_MIN_PHOTOS = 5  # fewer shared photos: alpha is not computed (it would say little)


def _alpha(shared: dict[str, dict[str, str]]) -> tuple[float | None, str | None]:
    if len(shared) < ALPHA_MIN_PHOTOS:
        return None, (f"too few photos with two reviewers to compute Krippendorff's alpha: {len(shared)} "
                      f"(it needs at least {ALPHA_MIN_PHOTOS})")
    values = sorted({v for votes in shared.values() for v in votes.values()})
    if len(values) < 2:
        return None, ("Krippendorff's alpha is undefined: every verdict on the photos with two reviewers is the "
                      f"same ({values[0]!r}), so there is no disagreement to compare with chance")
    codes = {v: i for i, v in enumerate(values)}
    reviewers = sorted({r for votes in shared.values() for r in votes})
    photos = sorted(shared)
    data = np.full((len(reviewers), len(photos)), np.nan)
    for j, photo in enumerate(photos):
        for i, reviewer in enumerate(reviewers):
            if reviewer in shared[photo]:
                data[i, j] = codes[shared[photo][reviewer]]
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")), None


def agreement(votes: Iterable[tuple[str, str, str]]) -> dict:
    """The figures above from (photo, reviewer, verdict) triples, oldest first."""
    per_photo: dict[str, list[tuple[str, str]]] = {}
    for photo, reviewer, verdict in votes:
        per_photo.setdefault(photo, []).append((reviewer, verdict))
    latest = {photo: latest_votes(pairs) for photo, pairs in per_photo.items()}
    shared = {photo: v for photo, v in latest.items() if len(v) >= 2}
    decided = {photo: decide(v) for photo, v in latest.items()}
    pairs = [a == b for v in shared.values() for a, b in combinations(v.values(), 2)]
    people: dict[str, dict] = {}
    for photo, v in latest.items():
        for reviewer, verdict in v.items():
            person = people.setdefault(reviewer, {"reviewer": reviewer, "judged": 0, "compared": 0, "agreed": 0})
            person["judged"] += 1
            label = decided[photo].label
            if photo in shared and label is not None:
                person["compared"] += 1
                person["agreed"] += verdict == label
    for person in people.values():
        person["agreement"] = person["agreed"] / person["compared"] if person["compared"] else None
    alpha, note = _alpha(shared)
    return {
        "photos": len(latest),
        "shared_photos": len(shared),
        "alpha": alpha,
        "alpha_note": note,
        "alpha_min_photos": ALPHA_MIN_PHOTOS,
        "pairs": len(pairs),
        "percent_agreement": sum(pairs) / len(pairs) if pairs else None,
        "contested": sum(c.contested for c in decided.values()),
        "unresolved": sum(c.unresolved for c in decided.values()),
        "reviewers": sorted(people.values(), key=lambda p: (-p["judged"], p["reviewer"])),
    }


def read_agreement(session: Session) -> dict:
    return agreement(store_votes(session))
