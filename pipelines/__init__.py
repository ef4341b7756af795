"""The training pipeline, its typed parameters, and the runners for each target."""
