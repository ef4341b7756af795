"""The KServe predictor for the champion model, its server entrypoint, load test and benchmark.

- ``serving.model``: ``CatDogModel``, a ``kserve.Model`` running the ONNX export (catdog.predictor)
  behind the shared preprocessing (catdog.preprocessing); loads a model folder, a gs:// model
  folder, or a registry version / the ``champion`` alias, and follows the alias when it changes;
  ``serving.requests`` decodes V1/V2 requests, ``serving.explain`` builds the explanations.
- ``serving.app``: the FastAPI application (KServe V1 + V2 routes, Vertex routes, health,
  metadata, /metrics) with request limits; ``serving.server``: ``python -m serving.server``.
- ``serving.baseline``: the naive baseline (Keras ``model.predict`` per request), for benchmarks.
- ``serving.client``: a small asyncio HTTP load client; ``serving.bench``: ``make bench-serving``;
  ``serving.bench_app``: ``make bench-app`` (the feedback app beside its predictor, over HTTP).
- ``serving.locustfile`` + ``serving.load_test``: ``make load-test``.

Nothing on the serving path imports TensorFlow: the server stays small.
"""
