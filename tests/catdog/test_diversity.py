"""catdog.diversity.k_center_greedy: farthest-first picks, as the app's diverse order and bench/active.py use it."""

from __future__ import annotations

import numpy as np

from catdog.diversity import k_center_greedy


def _clusters():
    rng = np.random.default_rng(0)
    corners = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], float)
    # 4 tight clusters of 25 points
    return corners, np.concatenate([c + rng.normal(scale=0.1, size=(25, 2)) for c in corners])


def test_k_center_greedy_spreads_its_picks():
    corners, points = _clusters()
    picked = k_center_greedy(points, corners[:1], 3)  # the labelled centre sits on the first cluster
    assert sorted(set(i // 25 for i in picked)) == [1, 2, 3]  # one in each cluster not yet covered
    assert picked[0] // 25 == 3  # the farthest from the labelled centre first
    assert len(set(k_center_greedy(points, np.empty((0, 2)), 4) // 25)) == 4
    assert len(set(k_center_greedy(points, corners[:1], 100).tolist())) == 100  # never twice


def test_without_centres_the_first_pick_is_the_first_row():
    _, points = _clusters()
    order = np.r_[60:100, 0:60]  # a caller's preferred order: cluster 2's rows first
    assert k_center_greedy(points[order], np.empty((0, 2)), 1).tolist() == [0]


def test_edge_cases():
    _, points = _clusters()
    assert k_center_greedy(points, np.empty((0, 2)), 0).tolist() == []
    assert k_center_greedy(points[:3], np.empty((0, 2)), 10).shape == (3,)
    assert k_center_greedy(np.empty((0, 2)), points, 5).tolist() == []
    # many centres (more than one chunk) give the same picks as the plain distances
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(9000, 2)) * 3
    candidates = rng.normal(size=(50, 2)) * 6
    nearest = np.sqrt(((candidates[:, None] - centres[None]) ** 2).sum(-1)).min(1)
    assert k_center_greedy(candidates, centres, 1).tolist() == [int(np.argmax(nearest))]
