"""The manifests (manifests/base, manifests/overlays/*) rendered by a small subset of kustomize
(resources, namespace, patches with `path` or inline `patch` and an optional target, images), so the
deploy step needs no kustomize binary; anything else in a kustomization is a ManifestError rather
than silently ignored. tests/manifests/test_manifests.py checks that it agrees with `kubectl
kustomize` where one is installed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from catdog import REPO_ROOT
from catdog.deploy.checks import ManifestError

DEFAULT_MANIFEST = "manifests/base"
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_KUSTOMIZE_KEYS = {"apiVersion", "kind", "resources", "namespace", "patches", "images"}


def resolve_manifest(path: str | Path) -> Path:
    """A manifest path as given, or relative to the repository (the component's working directory
    is not the repository's)."""
    path = Path(path).expanduser()
    if path.exists() or path.is_absolute():
        return path
    return REPO_ROOT / path


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge key by key, None deletes a key, anything else (lists
    included) replaces. It is also what kustomize's strategic merge does to a custom resource for the
    maps and scalars our overlays patch (it has no schema for lists inside an InferenceService)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _load_documents(path: Path) -> list[dict]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"cannot read {path}: {exc}") from exc
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            raise ManifestError(f"{path}: every document must be a Kubernetes object with apiVersion and kind")
    return docs


def _matches(doc: dict, target: dict) -> bool:
    unknown = set(target) - {"kind", "name", "group", "version", "namespace"}
    if unknown:
        raise ManifestError(f"unsupported patch target field(s) {sorted(unknown)}")
    group, _, version = doc["apiVersion"].rpartition("/")
    meta = doc.get("metadata", {})
    return all([
        target.get("kind", doc["kind"]) == doc["kind"],
        target.get("name", meta.get("name")) == meta.get("name"),
        target.get("group", group) == group,
        target.get("version", version) == version,
        target.get("namespace", meta.get("namespace")) == meta.get("namespace"),
    ])


def _set_images(node: Any, images: list[dict]) -> None:
    """kustomize's `images:` transformer: every containers[] / initContainers[] image, at any depth."""
    if isinstance(node, list):
        for item in node:
            _set_images(item, images)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in ("containers", "initContainers") and isinstance(value, list):
            for container in value:
                if isinstance(container, dict) and isinstance(container.get("image"), str):
                    container["image"] = _new_image(container["image"], images)
        _set_images(value, images)


def _new_image(image: str, images: list[dict]) -> str:
    name, tag = image, ""
    if "@" in image:
        name, tag = image.split("@", 1)
        tag = "@" + tag
    elif ":" in image.rsplit("/", 1)[-1]:
        name, tag = image.rsplit(":", 1)
        tag = ":" + tag
    for rule in images:
        if rule.get("name") != name:
            continue
        unknown = set(rule) - {"name", "newName", "newTag", "digest"}
        if unknown:
            raise ManifestError(f"unsupported images field(s) {sorted(unknown)}")
        if "digest" in rule:
            tag = "@" + rule["digest"]
        elif "newTag" in rule:
            tag = ":" + str(rule["newTag"])
        return rule.get("newName", name) + tag
    return image


def render(path: str | Path) -> list[dict]:
    """The objects a manifest file or a kustomization folder produces (a subset of `kustomize
    build`: resources, namespace, patches with `path` or inline `patch` and an optional target,
    images). Anything else in a kustomization is an error rather than silently ignored."""
    path = resolve_manifest(path)
    if path.is_file():
        return _load_documents(path)
    if not path.is_dir():
        raise ManifestError(f"no manifest at {path}")
    kfile = next((path / n for n in KUSTOMIZATION_FILES if (path / n).is_file()), None)
    if kfile is None:
        raise ManifestError(f"{path} is a folder without a kustomization.yaml")
    spec = yaml.safe_load(kfile.read_text()) or {}
    unsupported = set(spec) - SUPPORTED_KUSTOMIZE_KEYS
    if unsupported:
        raise ManifestError(f"{kfile}: unsupported kustomization key(s) {sorted(unsupported)} "
                            f"(supported: {sorted(SUPPORTED_KUSTOMIZE_KEYS)})")
    docs: list[dict] = []
    for resource in spec.get("resources", []):
        docs.extend(render(path / resource))
    for patch in spec.get("patches", []):
        if "path" in patch:
            body = _load_documents(path / patch["path"])
        elif "patch" in patch:
            body = [d for d in yaml.safe_load_all(patch["patch"]) if d is not None]
        else:
            raise ManifestError(f"{kfile}: a patch needs `path` or `patch`")
        if len(body) != 1 or not isinstance(body[0], dict):
            raise ManifestError(f"{kfile}: each patch must be one object (JSON 6902 lists are not supported)")
        body = body[0]
        target = patch.get("target") or {"kind": body.get("kind"), "name": body.get("metadata", {}).get("name")}
        hits = [i for i, doc in enumerate(docs) if _matches(doc, target)]
        if not hits:
            raise ManifestError(f"{kfile}: patch {patch.get('path', '(inline)')} matches no resource ({target})")
        for i in hits:
            docs[i] = merge_patch(docs[i], body)
    if "namespace" in spec:
        for doc in docs:
            doc.setdefault("metadata", {})["namespace"] = spec["namespace"]
    if spec.get("images"):
        for doc in docs:
            _set_images(doc, spec["images"])
    return docs
