"""How a retraining run starts, is watched and stops on each target: base.py (the Launcher protocol
the run service calls), local.py, kubeflow.py and vertex.py (remote.py: what the last two share)."""
