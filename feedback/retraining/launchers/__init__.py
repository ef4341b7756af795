"""How a retraining run starts, is watched and stops on each target: base.py (the Launcher protocol
the run service calls), local.py, kubeflow.py and vertex.py (remote.py: what the last two share)."""

from __future__ import annotations

from pathlib import Path


def default_launchers(settings, training) -> dict:
    """One launcher per target of `training` (feedback.retraining.config.TrainingConfig), for the
    app's run service and the cron entry; `settings` (feedback.settings.Settings) gives runs_dir.
    Each launcher module is imported only for a target that uses it (the remote ones need kfp or
    aiplatform)."""
    launchers: dict = {}
    for name, target in training.targets.items():
        if name == "local":
            from feedback.retraining.launchers.local import LocalLauncher

            launchers[name] = LocalLauncher(Path(settings.runs_dir), target)
        elif name == "vertex":
            from feedback.retraining.launchers.vertex import VertexLauncher

            launchers[name] = VertexLauncher(target)
        else:
            from feedback.retraining.launchers.kubeflow import KubeflowLauncher

            launchers[name] = KubeflowLauncher(target)
    return launchers
