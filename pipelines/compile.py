"""`make compile`: write compiled/training_pipeline.yaml from the pipeline source."""

from pathlib import Path

from kfp import compiler

from catdog import REPO_ROOT
from pipelines.training_pipeline import training_pipeline

COMPILED_DIR = REPO_ROOT / "compiled"
PIPELINE_YAML = COMPILED_DIR / "training_pipeline.yaml"


def compile_pipeline(path: Path = PIPELINE_YAML) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(training_pipeline, str(path))
    return path


if __name__ == "__main__":
    print(f"wrote {compile_pipeline()}")
