"""The consensus rule (feedback/labelling/consensus.py), as pure functions: each reviewer's latest
verdict, names compared trimmed and case-folded, unnamed verdicts one reviewer "anonymous",
majority wins, a tie unresolved, "neither" a vote like a label."""

from __future__ import annotations

import pytest

from feedback.labelling.consensus import ANONYMOUS, consensus, decide, latest_votes, reviewer_key


@pytest.mark.parametrize("by, key", [("Ana", "ana"), ("  ANA\t", "ana"), ("Straße", "strasse"), (None, ANONYMOUS),
                                     ("", ANONYMOUS), ("   ", ANONYMOUS)])
def test_reviewer_key_trims_and_case_folds(by, key):
    assert reviewer_key(by) == key


def test_a_single_reviewer_is_the_label_latest_verdict_wins():
    result = consensus([("ana", "cat"), ("ana", "dog")])
    assert (result.label, result.reviewers, result.contested, result.unresolved) == ("dog", 1, False, False)


def test_each_persons_latest_verdict_counts_once_whatever_the_case_of_the_name():
    # Ana says cat twice and then dog: her one vote is dog; Ben says cat: a tie, not 2 cats against 1 dog
    result = consensus([("Ana", "cat"), ("ben", "cat"), ("ANA ", "cat"), (" ana", "dog")])
    assert latest_votes([("Ana", "cat"), ("ben", "cat"), (" ana", "dog")]) == {"ben": "cat", "ana": "dog"}
    assert (result.label, result.reviewers, result.contested, result.unresolved) == (None, 2, True, True)
    assert result.counts == {"cat": 1, "dog": 1}


def test_majority_wins_and_a_contested_photo_with_a_majority_is_resolved():
    result = consensus([("ana", "cat"), ("ben", "dog"), ("cy", "cat")])
    assert (result.label, result.reviewers, result.contested, result.unresolved) == ("cat", 3, True, False)


def test_a_later_verdict_breaks_a_tie_and_a_change_of_mind_can_make_one():
    assert consensus([("ana", "cat"), ("ben", "dog"), ("cy", "dog")]).label == "dog"
    assert consensus([("ana", "cat"), ("ben", "dog"), ("cy", "dog"), ("cy", "cat")]).label == "cat"
    tied = consensus([("ana", "cat"), ("ben", "dog"), ("cy", "cat"), ("cy", "neither"), ("dee", "dog"), ("ana", "neither")])
    assert tied.counts == {"neither": 2, "dog": 2} and tied.label is None and tied.unresolved


def test_unnamed_verdicts_are_one_reviewer_anonymous():
    """A single-user setup that never gives a name behaves as before: the latest verdict is the label."""
    result = consensus([(None, "cat"), ("", "dog"), ("  ", "neither")])
    assert (result.label, result.reviewers, result.contested) == ("neither", 1, False)
    both = consensus([(None, "cat"), ("ana", "dog")])
    assert both.unresolved and latest_votes([(None, "cat"), ("ana", "dog")]) == {ANONYMOUS: "cat", "ana": "dog"}


def test_neither_is_a_vote_like_a_label():
    assert consensus([("ana", "neither"), ("ben", "neither"), ("cy", "cat")]).label == "neither"
    assert consensus([("ana", "neither"), ("ben", "cat")]).unresolved
    three_ways = consensus([("ana", "neither"), ("ben", "cat"), ("cy", "dog")])
    assert three_ways.label is None and three_ways.counts == {"neither": 1, "cat": 1, "dog": 1}


def test_no_verdict_no_label_and_not_unresolved():
    result = decide({})
    assert (result.label, result.reviewers, result.contested, result.unresolved) == (None, 0, False, False)
