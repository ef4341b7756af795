"""The KServe predictor for the champion model and its server entrypoint (its load test and benchmark: bench/).

- ``serving.kserve_model``: ``CatDogModel``, a ``kserve.Model`` running the ONNX export (catdog.onnx_predictor)
  behind the shared preprocessing (catdog.preprocessing); loads a model folder, a gs:// model
  folder, or a registry version / the ``champion`` alias, and follows the alias when it changes;
  ``serving.requests`` decodes V1/V2 requests, ``serving.explain`` builds the explanations.
- ``serving.app``: the FastAPI application (KServe V1 + V2 routes, Vertex routes, health,
  metadata, /metrics) with request limits; ``serving.server``: ``python -m serving.server``.

Nothing on the serving path imports TensorFlow: the server stays small.
"""
