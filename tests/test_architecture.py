"""The rooms of the repository and what each may import (docs/architecture.md).

Read from the source with `ast`, so a lazy import inside a function counts as much as one at the top:
- `catdog` (the ML library every image ships) imports none of the other rooms;
- nothing outside `feedback` imports `feedback` (the app is a leaf: it calls the pipelines, the
  pipelines never call it; bench and container_tests start it as a process, never import it);
- no product module imports `bench` (benchmarks measure the product; they are not part of it);
- `components` import only `catdog` of the rooms (a component is a thin KFP wrapper);
- `serving` imports only `catdog` of the rooms (the predictor image ships catdog and serving only);
- `pipelines` imports `catdog` and `components`, and `container_tests` only where EXCEPTIONS says.
The product images' build contexts are checked apart (tests/bench/test_apart.py: no image copies bench/).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

PRODUCT = ("catdog", "components", "pipelines", "serving", "feedback")
ROOMS = (*PRODUCT, "bench", "container_tests", "ops")
# room -> the rooms it may import (itself always allowed)
ALLOWED = {
    "catdog": set(),
    "components": {"catdog"},
    "serving": {"catdog"},
    "pipelines": {"catdog", "components"},
    "feedback": {"catdog", "pipelines"},
    "bench": {"catdog", "components", "pipelines", "serving"},
    "container_tests": {"catdog", "components", "pipelines", "serving"},
    "ops": set(),  # the monitoring manifests' generator: reads manifests/monitoring/rules.yaml, imports no room
}
# module -> the modules of a room ALLOWED does not give it, that it alone may import, and why
EXCEPTIONS = {
    "pipelines/container_run.py": {
        # `make run RUNNER=container` builds the component image with the same podman builder
        # `make image-test` uses (one way to build an image, not two); it runs on the host, and
        # no image holds container_tests/ code (the .dockerignore files let in only its wheelhouse,
        # which the pip step mounts); the imports are inside the functions that build.
        "container_tests.build",
        "container_tests.common",  # its Failure, the error the builder raises

    },
}


def imports(path: Path) -> set[tuple[str, int]]:
    """(absolute module name, line) of every import in the file, lazy ones inside functions included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name, node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module, node.lineno))
    return found


def imported_rooms(path: Path) -> set[tuple[str, int]]:
    return {(name.split(".")[0], line) for name, line in imports(path) if name.split(".")[0] in ROOMS}


def modules(room: str) -> list[Path]:
    return sorted((REPO_ROOT / room).rglob("*.py"))


def _wrong_imports(room: str) -> list[str]:
    wrong = []
    for path in modules(room):
        relative = str(path.relative_to(REPO_ROOT))
        for name, line in sorted(imports(path)):
            target = name.split(".")[0]
            if target not in ROOMS or target == room or target in ALLOWED[room]:
                continue
            if name in EXCEPTIONS.get(relative, ()):
                continue
            wrong.append(f"{relative}:{line} imports {name}")
    return wrong


@pytest.mark.parametrize("room", ROOMS)
def test_a_room_imports_only_what_it_may(room):
    assert modules(room), f"{room}/ has no Python modules: update ROOMS and docs/architecture.md"
    wrong = _wrong_imports(room)
    assert not wrong, "imports against docs/architecture.md:\n" + "\n".join(wrong)


def test_the_intended_directions():
    """The table itself: the directions docs/architecture.md promises, so ALLOWED cannot be widened quietly."""
    assert ALLOWED["catdog"] == set()
    assert all("feedback" not in allowed for room, allowed in ALLOWED.items() if room != "feedback")
    assert all("bench" not in ALLOWED[room] for room in PRODUCT)
    assert ALLOWED["components"] == ALLOWED["serving"] == {"catdog"}
    assert all("container_tests" not in ALLOWED[room] for room in PRODUCT)


def test_every_exception_is_still_needed():
    """An exception the code no longer uses goes (so the table stays the truth)."""
    for relative, names in EXCEPTIONS.items():
        imported = {name for name, _ in imports(REPO_ROOT / relative)}
        assert names <= imported, f"{relative} no longer imports {sorted(names - imported)}: drop the exception"


def test_every_top_level_package_is_a_known_room():
    packages = {p.parent.name for p in REPO_ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == set(ROOMS), "a new top-level package needs a row in docs/architecture.md and ALLOWED"


def test_the_checker_sees_lazy_imports_and_exceptions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from feedback.settings import Settings\n    import bench.report\n")
    assert {room for room, _ in imported_rooms(module)} == {"feedback", "bench"}
    assert ("feedback.settings", 2) in imports(module)
