"""Benchmarks stay out of the product: no product module imports bench/, and the product images'
build contexts (their .dockerignore files) do not let bench/ in, so no image copies it."""

from __future__ import annotations

import ast

import pytest

from tests.container_tests.test_images import instructions, let_through
from tests.helpers import REPO_ROOT

PRODUCT = ["catdog", "serving", "pipelines", "components", "feedback"]
DOCKERFILES = ["serving/Dockerfile", "components/Dockerfile", "feedback/Dockerfile"]


def imported_modules(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_product_module_imports_bench():
    offenders = {str(path.relative_to(REPO_ROOT)): sorted(m for m in imported_modules(path) if m.split(".")[0] == "bench")
                 for folder in PRODUCT for path in sorted((REPO_ROOT / folder).rglob("*.py"))}
    assert {path: modules for path, modules in offenders.items() if modules} == {}


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_product_images_do_not_take_bench(dockerfile):
    dockerignore = REPO_ROOT / f"{dockerfile}.dockerignore"
    assert not let_through(dockerignore, "bench/")
    assert not let_through(dockerignore, "bench/serving.py")
    copied = [args for keyword, args in instructions(REPO_ROOT / dockerfile) if keyword == "COPY"]
    assert copied and not any("bench" in args for args in copied), copied
