"""Benchmarks stay out of the product images: their build contexts (the .dockerignore files) do not
let bench/ in, and no Dockerfile copies it. That no product module imports bench is checked with the
other import directions in tests/test_architecture.py."""

from __future__ import annotations

import pytest

from tests.container_tests.test_images import instructions, let_through
from tests.helpers import REPO_ROOT

DOCKERFILES = ["serving/Dockerfile", "components/Dockerfile", "feedback/Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_product_images_do_not_take_bench(dockerfile):
    dockerignore = REPO_ROOT / f"{dockerfile}.dockerignore"
    assert not let_through(dockerignore, "bench/")
    assert not let_through(dockerignore, "bench/serving.py")
    copied = [args for keyword, args in instructions(REPO_ROOT / dockerfile) if keyword == "COPY"]
    assert copied and not any("bench" in args for args in copied), copied
