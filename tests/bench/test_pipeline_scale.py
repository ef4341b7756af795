"""make bench-scale's photo maker and step attribution (the benchmark itself runs on ../shared)."""

from __future__ import annotations

import hashlib

from bench.pipeline_scale import _step_of, make_photos
from tests.helpers import make_class_folders


def test_photos_made_from_few_are_all_distinct_and_keep_their_class(tmp_path):
    source = make_class_folders(tmp_path / "src", {"cats": 3, "dogs": 3}, size=(80, 60))
    total = make_photos(source, 40, tmp_path / "out")
    photos = sorted((tmp_path / "out").rglob("*.jpg"))
    assert len(photos) == 40 and total == sum(p.stat().st_size for p in photos)
    assert len({hashlib.sha256(p.read_bytes()).hexdigest() for p in photos}) == 40
    assert {p.parent.name for p in photos} == {"cat", "dog"}
    assert len(list((tmp_path / "out" / "cat").glob("*.jpg"))) == 20  # the classes in turn


def test_a_task_process_is_attributed_to_its_step():
    assert _step_of(["sh", "-ec", "prog", "src", "--executor_input", "{}", "--function_to_execute", "select_champion"]) \
        == "select-champion"
    assert _step_of(["python3", "-m", "kfp.dsl.executor_main", "--function_to_execute", "train"]) == "train"
    assert _step_of(["python3", "-m", "pytest"]) is None
