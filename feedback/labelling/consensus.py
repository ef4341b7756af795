"""The consensus of several reviewers: the one rule that turns a photo's verdicts into its label.

Pure functions, no I/O; the store applies them under the photo's row lock with every verdict
(feedback.store.consensus_queries.apply_consensus), the migration 0006 to the verdicts a database
already held, and the dashboard's agreement figures (feedback/monitoring/agreement.py) read the
same latest votes.

- A reviewer is a name, compared after trimming and case-folding (reviewer_key): "Ann", " ann "
  and "ANN" are one person. Verdicts without a name are one reviewer, ANONYMOUS, so a single-user
  setup that never gives a name behaves as before: its latest verdict is the label.
- Each reviewer's latest verdict counts (an earlier one of the same person is replaced, never
  added); "neither" is a vote like a class label.
- Majority wins: the label with the most latest votes. A tie for the most votes leaves the photo
  unresolved (label None): it is not used for training until another verdict breaks the tie.
- Contested: the reviewers' latest verdicts are not all the same (a tie included); such photos,
  and photos only one person judged while the model was unsure, are offered for a second opinion.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

ANONYMOUS = "anonymous"  # the reviewer of verdicts sent without a name


def reviewer_key(by: str | None) -> str:
    """Who a verdict's `by` names, for comparing: trimmed and case-folded; ANONYMOUS when empty."""
    key = (by or "").strip().casefold()
    return key or ANONYMOUS


def latest_votes(verdicts: Iterable[tuple[str | None, str]]) -> dict[str, str]:
    """reviewer -> their latest verdict, from (by, label) pairs given oldest first."""
    votes: dict[str, str] = {}
    for by, label in verdicts:
        key = reviewer_key(by)
        votes.pop(key, None)  # keeps the dict in order of each reviewer's latest verdict
        votes[key] = label
    return votes


@dataclass(frozen=True)
class Consensus:
    label: str | None  # the majority's verdict; None without verdicts or on a tie
    reviewers: int  # people whose latest verdict counts
    contested: bool  # their latest verdicts differ (a tie included)
    counts: dict[str, int] = field(default_factory=dict)  # verdict -> reviewers whose latest it is

    @property
    def unresolved(self) -> bool:
        """Judged, but the reviewers tie: no label."""
        return self.reviewers > 0 and self.label is None


def decide(votes: dict[str, str]) -> Consensus:
    """The consensus of reviewer -> latest verdict (latest_votes)."""
    counts = Counter(votes.values())
    if not counts:
        return Consensus(None, 0, False, {})
    ranked = counts.most_common()
    top = ranked[0][1]
    winners = [label for label, n in ranked if n == top]
    return Consensus(winners[0] if len(winners) == 1 else None, len(votes), len(counts) > 1, dict(counts))


def consensus(verdicts: Iterable[tuple[str | None, str]]) -> Consensus:
    """The consensus of a photo's verdicts, (by, label) pairs oldest first."""
    return decide(latest_votes(verdicts))
