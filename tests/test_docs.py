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
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from pipelines.config import PipelineConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
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


@pytest.mark.parametrize("document", ["feedback.md", "retraining.md"])
def test_every_route_the_guide_lists_is_served(document):
    from feedback.web.app import create_app

    from feedback.settings import load_settings

    class _Service:  # create_app reads the service's settings only, to add its middleware
        settings = load_settings(environ={})

        def close(self):
            pass

    app = create_app(_Service())
    served = {re.sub(r"\{[^}]+\}", "{}", path) for path in app.openapi()["paths"]}
    text = DOCS[document]
    assert "not yet" not in text.lower(), f"docs/{document} still says a feature is 'not yet' there"
    listed = {re.sub(r"\{[^}]+\}", "{}", path) for path in re.findall(r"`(?:GET|POST|PUT|DELETE) (/api/[^`?\s]*|/health|/ready)", text)}
    assert listed, f"no route found in docs/{document}"
    missing = sorted(path for path in listed if path not in served)
    assert not missing, f"docs/{document} lists routes the app does not serve: {missing}"
