"""KFP components: one thin wrapper per pipeline step over the plain functions in catdog/.

Every component runs in the image built from components/Dockerfile (the project installed with
its pinned dependencies), so install_kfp_package=False: nothing is pip-installed at run time.
The tag below is the one the compiled YAML carries; runners for remote targets swap in the
pushed image (see docs/kubeflow.md and docs/vertex.md).
"""

BASE_IMAGE = "catdog-components:0.1.0"
