"""deploy_target=local: `make serve` (MODEL=champion) follows the registry's champion alias, so
deploying means checking that the alias names the promoted version and that it loads and predicts."""

from __future__ import annotations

from catdog.deploy.checks import smoke_test
from catdog.registry import ModelRegistry, RegistryError


def deploy_local(registry_uri: str, version: int) -> str:
    """Local target: `make serve` (MODEL=champion) follows the registry's champion alias and reloads
    on change, so deploying means checking the alias names this version and that it loads and
    predicts; a broken model fails here, before anyone is served by it."""
    registry = ModelRegistry(registry_uri)
    if registry.champion_version() != version:
        raise RegistryError(f"champion of {registry.uri} is v{registry.champion_version()}, expected v{version}")
    smoke_test(registry.fetch(version))
    return f"local: champion alias -> v{version}; `make serve` reloads it"
