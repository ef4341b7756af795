"""Plain, typed, unit-tested functions behind the pipeline's KFP components and the server.

REPO_ROOT: the folder holding catdog/ (the repository; /app in the images), the one definition the
product code uses for paths relative to the repository (manifests/, compiled/, local_outputs/).
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
