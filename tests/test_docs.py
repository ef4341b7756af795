"""The README and docs/ checked against the code: defaults, make targets and words, routes.

What a new user reads first must be what the code does:
- the README's sentence on the model's recipe states PipelineConfig's defaults;
- every `make <target> ...` written in README.md or docs/*.md names a target of the Makefile, and
  its KEY=value words are words that target takes (pipeline parameters, runner settings, the
  app's settings or Makefile variables);
- the user-facing examples of the README (its code blocks outside the Benchmarks section) use no
  `../shared` path, which a clone does not have;
- every `/api/...` route the feedback guide lists is served by the app, and the guide marks none
  as missing ("not yet");
- where to get the backbone weights offline is written down (the Keras download address).
- every repository path, relative link and `python -m` / dotted module the README and docs/ name
  exists (a short allow-list, each entry with its reason, holds the words that look like paths but
  are not: Kubernetes namespace/name pairs, a run's output folder, the reader's own overlay);
- docs/architecture.md's route table lists every route of feedback/web/routers.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from pipelines.config import PipelineConfig
from tests.helpers import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()
DOCS = {path.name: path.read_text() for path in sorted((REPO_ROOT / "docs").glob("*.md"))}
ALL_DOCS = {"README.md": README, **DOCS}
CODE_BLOCK = re.compile(r"```[a-z]*\n(.*?)```", re.S)
INLINE_MAKE = re.compile(r"`(make [^`]+)`")


def _makefile_targets() -> set[str]:
    text = (REPO_ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-zA-Z][a-zA-Z0-9_-]*):", text, re.M))


def _makefile_variables() -> set[str]:
    text = (REPO_ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]*) *[?:]?=", text, re.M))


def _make_commands() -> list[tuple[str, str]]:
    """(document, command) for every `make ...` in a code block or inline code span."""
    found = []
    for name, text in ALL_DOCS.items():
        for block in CODE_BLOCK.findall(text):
            for line in block.splitlines():
                line = line.split("#", 1)[0].strip()
                if line.startswith("make "):
                    found.append((name, line))
        for span in INLINE_MAKE.findall(CODE_BLOCK.sub("", text)):
            found.append((name, span.split("#", 1)[0].strip()))
    return found


def _known_upper_words() -> set[str]:
    from feedback.settings import ENVIRONMENT
    from pipelines.words import ALIASES, RUNNER_SETTINGS, SCHEDULE_SETTINGS

    return set(ALIASES) | set(RUNNER_SETTINGS) | set(SCHEDULE_SETTINGS) | set(ENVIRONMENT) | _makefile_variables()


def test_readme_states_the_recipe_defaults():
    defaults = PipelineConfig()
    pattern = (r"**Model**: MobileNetV2 (alpha @) at @ px, @ frozen-backbone epochs then up to @ fine-tuning "
               r"epochs of the top @ layers")
    regex = r"\s+".join(re.escape(word) for word in pattern.split()).replace("@", r"([\d.]+)")
    match = re.search(regex, README)
    assert match, "README's **Model** sentence (alpha, size, epochs, layers) is missing or reworded"
    alpha, size, frozen, finetune, layers = match.groups()
    assert (float(alpha), int(size), int(frozen), int(finetune), int(layers)) == (
        defaults.backbone_alpha, defaults.image_size, defaults.frozen_epochs, defaults.finetune_epochs,
        defaults.finetune_layers), "README's recipe differs from pipelines/config.py's defaults"


def test_every_make_command_in_the_docs_names_a_target_and_its_words():
    targets = _makefile_targets()
    parameters = set(PipelineConfig.model_fields)
    upper = _known_upper_words()
    commands = _make_commands()
    assert len(commands) > 20  # the parser still finds the examples
    problems = []
    for document, command in commands:
        words = shlex.split(re.sub(r"[\[\]|\\]", " ", command))
        target = words[1] if len(words) > 1 else ""
        if target.startswith("-"):  # make -n ...
            continue
        if target not in targets:
            problems.append(f"{document}: `{command}`: no make target {target!r}")
            continue
        for word in words[2:]:
            key, sep, _ = word.partition("=")
            if not sep or key in ("key",) or word.startswith("..."):
                continue
            if key.isupper():
                if key not in upper:
                    problems.append(f"{document}: `{command}`: unknown setting {key}")
            elif key not in parameters:
                problems.append(f"{document}: `{command}`: unknown pipeline parameter {key}")
    assert not problems, "\n".join(problems)


def test_readme_examples_need_no_shared_folder():
    """A clone has no ../shared: only the Benchmarks section may use it (benchmarks take that path)."""
    user_part = README.split("\n## Benchmarks", 1)[0]
    offending = [line for block in CODE_BLOCK.findall(user_part) for line in block.splitlines()
                 if "../shared" in line.split("#", 1)[0]]
    assert not offending, offending


def test_readme_says_where_the_backbone_weights_come_from():
    assert "storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/" in README


def _app():
    from feedback.settings import load_settings
    from feedback.web.app import create_app

    class _Service:  # create_app reads the service's settings only, to add its middleware
        settings = load_settings(environ={})

        def close(self):
            pass

    return create_app(_Service())


def test_the_architecture_page_lists_every_route_of_the_app():
    """docs/architecture.md's route table is the one hop from a route to its code: every route of
    every router module (feedback/web/routers/*.py) is in it (method and path, a path parameter
    written {id})."""
    import importlib

    from fastapi.routing import APIRoute

    text = DOCS["architecture.md"]
    routes = set()
    for path in sorted((REPO_ROOT / "feedback/web/routers").glob("[!_]*.py")):
        router = importlib.import_module(f"feedback.web.routers.{path.stem}").router
        routes |= {(method, re.sub(r"\{[^}]+\}", "{}", route.path)) for route in router.routes
                   if isinstance(route, APIRoute) for method in route.methods}
    assert len(routes) > 20
    listed = {(method, re.sub(r"\{[^}]+\}", "{}", path)) for method, path in re.findall(r"`(GET|POST|PUT|DELETE) (/[^`\s]*)", text)}
    missing = sorted(routes - listed)
    assert not missing, f"docs/architecture.md's route table lacks: {missing}"


@pytest.mark.parametrize("document", ["feedback.md", "retraining.md", "architecture.md"])
def test_every_route_the_guide_lists_is_served(document):
    app = _app()
    served = {re.sub(r"\{[^}]+\}", "{}", path) for path in app.openapi()["paths"]}
    text = DOCS[document]
    assert "not yet" not in text.lower(), f"docs/{document} still says a feature is 'not yet' there"
    listed = {re.sub(r"\{[^}]+\}", "{}", path) for path in re.findall(r"`(?:GET|POST|PUT|DELETE) (/api/[^`?\s]*|/health|/ready)", text)}
    assert listed, f"no route found in docs/{document}"
    missing = sorted(path for path in listed if path not in served)
    assert not missing, f"docs/{document} lists routes the app does not serve: {missing}"


# --- every repository path and module the docs name exists -------------------------------------
# A path-like word (a/b, a/b.py, a/) is a repository path when its first folder is a top-level
# entry of the repository, or when it ends in a source or config suffix (so a renamed top-level
# folder, like images/ -> container_tests/, is still caught). Relative link targets are resolved
# from the document's folder. Paths that start with ../ outside links (../shared, a user's clone)
# and absolute ones (/api/..., /static/...) are not repository paths.
PATH_WORD = re.compile(r"(?<![\w/:.~$@\[-])[A-Za-z_][\w.-]*(?:/[\w.*-]+)+/?")
LINK_TARGET = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
SOURCE_SUFFIX = re.compile(r"\.(py|js|css|html|ya?ml|toml|conf|cfg|ini|lock|sh|mako|md)$|Dockerfile(\.dockerignore)?$")
ROOMS = ("catdog", "components", "pipelines", "serving", "feedback", "bench", "container_tests", "tests")
DOTTED_SPAN = re.compile(rf"`((?:{'|'.join(ROOMS)})(?:\.[A-Za-z_]\w*)+)(?:\([^`]*\))?`")
PYTHON_M = re.compile(r"python3? -m ([\w.]+)")
NOT_REPO_PATHS = {
    # Kubernetes <namespace>/<name> of the app's and the predictor's objects, not folders
    "catdog/catdog-feedback": "the app's namespace/service account (Workload Identity)",
    "catdog/catdog": "the InferenceService catdog in namespace catdog (a deploy step's message)",
    # a folder the reader creates next to the clone, in the kustomize overlay example
    "my-feedback/kustomization.yaml": "the reader's own overlay",
}
NOT_REPO_PREFIXES = {
    "local_outputs/": "what a local run writes (git-ignored), shown in example output",
    "bench_outputs/": "what the benches write (git-ignored); present only on a machine that ran one",
}
FILE_SUFFIXES = ("db", "env", "md", "py", "json", "yaml", "html", "log", "svc")  # feedback.db is a file name


def _path_words(document: str, text: str) -> list[str]:
    top = {path.name for path in REPO_ROOT.iterdir() if not path.name.startswith(".")}
    words = []
    without_links = LINK_TARGET.sub("]", text)
    for match in PATH_WORD.finditer(without_links):
        word = match.group(0).rstrip(".")
        if without_links[match.end():match.end() + 3].startswith("://"):
            continue
        if word.split("/")[0] in top or SOURCE_SUFFIX.search(word):
            words.append(word)
    return words


def _exists(path: Path) -> bool:
    return any(path.parent.glob(path.name)) if "*" in path.name else path.exists()


def _module_exists(dotted: str) -> bool:
    """True when a prefix of `dotted` is a module or package of the repository and the rest (at most
    one name, a function or class) is defined or imported in it."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = REPO_ROOT.joinpath(*parts[:cut])
        source = base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"
        if source.exists():
            rest = parts[cut:]
            return not rest or (len(rest) == 1 and re.search(rf"\b{rest[0]}\b", source.read_text()) is not None)
    return False


def test_every_repository_path_the_docs_name_exists():
    problems = []
    for document, text in ALL_DOCS.items():
        folder = REPO_ROOT if document == "README.md" else REPO_ROOT / "docs"
        for target in LINK_TARGET.findall(text):
            if "://" not in target and not target.startswith("mailto:") and not _exists(folder / target):
                problems.append(f"{document}: link ({target})")
        for word in _path_words(document, text):
            if word in NOT_REPO_PATHS or word.startswith(tuple(NOT_REPO_PREFIXES)):
                continue
            if not _exists(REPO_ROOT / word):
                problems.append(f"{document}: {word}")
    assert len(problems) == 0, "paths the docs name that the repository lacks:\n" + "\n".join(sorted(set(problems)))


def test_every_module_the_docs_name_exists():
    problems = []
    found = 0
    for document, text in ALL_DOCS.items():
        names = PYTHON_M.findall(text) + [name for name in DOTTED_SPAN.findall(text)
                                          if name.rsplit(".", 1)[-1] not in FILE_SUFFIXES]
        for name in names:
            found += 1
            if name.split(".")[0] in ROOMS and not _module_exists(name):
                problems.append(f"{document}: {name}")
    assert found > 5  # the patterns still find the modules the docs name
    assert not problems, "modules the docs name that the repository lacks:\n" + "\n".join(sorted(set(problems)))


def test_the_path_checker_catches_a_moved_file():
    assert _path_words("x.md", "see `images/image_test.py`, catdog/deploy.py and gs://b/catdog/x") == [
        "images/image_test.py", "catdog/deploy.py"]
    assert not _exists(REPO_ROOT / "images/image_test.py")
    assert _module_exists("feedback.web.server") and not _module_exists("feedback.server")
    assert _module_exists("catdog.registry.decision_of_run") and not _module_exists("catdog.registry.no_such_name")
