"""Who gives a verdict: the `by` of API verdicts, of the page's buttons and of upload-data.

reviewer_name(by, required): the name trimmed (None when empty). With APP_TOKEN set (Settings.
auth_required) every verdict must be attributable, so an empty name is NameRequired (a 422 whose
message names the fix); without APP_TOKEN the name stays optional, and verdicts without one are
one reviewer, "anonymous" (feedback/labelling/consensus.py).
"""

from __future__ import annotations


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
