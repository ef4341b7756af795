"""Benchmarks and load tools: measuring code, never imported by the product (catdog, serving, pipelines,
components, feedback) and never copied into its images.

- ``bench.pipeline``: ``make bench`` (the whole pipeline beside the TF tutorial, ``bench.tutorial_baseline``);
  ``bench.pipeline_scale``: ``make bench-scale``; ``bench.profile_training``: ``make profile-train``.
- ``bench.serving``: ``make bench-serving`` (the predictor beside ``bench.naive_server``, a Keras
  ``model.predict`` per request); ``bench.app``: ``make bench-app`` (the feedback app beside its predictor).
- ``bench.load_client``: the asyncio closed-loop HTTP client both use; ``bench.load_test`` +
  ``bench/locustfile.py``: ``make load-test``.
- ``bench.recipe_sweep``: the training-recipe sweep behind the pipeline's defaults (a GPU experiment).
- ``bench.report``: the machine description and the named sections of docs/BENCHMARKS.md they write.

Run them from the repository root (the Makefile does: ``python -m bench.<module>``).
"""
