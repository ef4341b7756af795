"""Who gives a verdict: the `by` of API verdicts, of the page's buttons and of upload-data; and
what upload-data reports for a photo once the uploader's vote counted (upload_outcome).

reviewer_name(by, required): the name trimmed (None when empty). With APP_TOKEN set (Settings.
auth_required) every verdict must be attributable, so an empty name is NameRequired (a 422 whose
message names the fix); without APP_TOKEN the name stays optional, and verdicts without one are
one reviewer, "anonymous" (feedback/labelling/consensus.py).
"""

from __future__ import annotations

from feedback.store.tables import NEITHER


class NameRequired(ValueError):
    """A verdict without a name while APP_TOKEN is set: 422."""


REQUIRED_MESSAGE = ("'by' (who gives this verdict) is required because this app has an APP_TOKEN: send your name, "
                    "e.g. {\"label\": \"cat\", \"by\": \"ana\"} to the validation route or the form field by=ana to "
                    "upload-data; the page asks for it once and remembers it")


def reviewer_name(by: str | None, required: bool) -> str | None:
    """`by` trimmed, None when empty; NameRequired when empty and `required`."""
    name = (by or "").strip() or None
    if name is None and required:
        raise NameRequired(REQUIRED_MESSAGE)
    return name


def upload_outcome(label: str, previous: str | None, current: str | None) -> str:
    """What upload-data reports for a photo given `label`: its label was `previous` (None: none) and,
    the uploader's vote counted, is `current` (the consensus: feedback/labelling/consensus.py)."""
    if label == NEITHER and current == NEITHER:
        return "neither: not in the dataset"
    if current is None:
        return "unresolved: its reviewers tie, so it is not in the dataset"
    if current != label:
        return f"counted, but the majority of its reviewers says {current}"
    return "added" if previous in (None, NEITHER) else "already in the dataset" if previous == label else "relabelled"
