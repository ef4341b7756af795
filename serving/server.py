"""`make serve`: serve a model with the KServe predictor.

    python -m serving.server [--model champion|N|MODEL_DIR|gs://MODEL_DIR] [--registry URI]
                             [--host 127.0.0.1] [--port 8080] [--reload-interval 5] ...

Binds 127.0.0.1 unless told otherwise (the container passes --host 0.0.0.0). On Vertex AI the
port, health route and predict route come from AIP_HTTP_PORT, AIP_HEALTH_ROUTE and
AIP_PREDICT_ROUTE, and the model from AIP_STORAGE_URI when --model/CATDOG_MODEL is not given.
Serving `champion` follows the registry's alias: a newly promoted version is loaded and swapped
in without downtime (polled every --reload-interval seconds; 0 turns it off).

We run uvicorn ourselves rather than kserve.ModelServer: ModelServer binds 0.0.0.0 and starts a
gRPC server; the routes, data plane and model contract are KServe's (see serving.app).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from catdog.preprocessing import DEFAULT_MAX_PIXELS


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m serving.server", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default=env("CATDOG_MODEL") or env("AIP_STORAGE_URI") or env("CATDOG_DEFAULT_MODEL")
                        or "champion",
                        help="'champion', a registry version number, a model folder or a gs:// model folder "
                             "(env CATDOG_MODEL, else AIP_STORAGE_URI, else CATDOG_DEFAULT_MODEL)")
    parser.add_argument("--registry", default=env("CATDOG_REGISTRY", "registry"),
                        help="registry folder or gs:// prefix, for 'champion' and version numbers (env CATDOG_REGISTRY)")
    parser.add_argument("--host", default=env("CATDOG_HOST", "127.0.0.1"), help="address to bind (env CATDOG_HOST)")
    parser.add_argument("--port", "--http_port", dest="port", type=int, default=int(env("AIP_HTTP_PORT", "8080")),
                        help="port (env AIP_HTTP_PORT)")
    parser.add_argument("--model-name", "--model_name", dest="model_name", default="catdog",
                        help="name in the URL paths")
    parser.add_argument("--max-body-bytes", type=int, default=int(env("CATDOG_MAX_BODY_BYTES", 10 * 1024 * 1024)),
                        help="larger request bodies get 413 (env CATDOG_MAX_BODY_BYTES)")
    parser.add_argument("--header-timeout", type=float, default=float(env("CATDOG_HEADER_TIMEOUT_S", 10)),
                        help="seconds a connection may take to send a request's headers (from its opening or the "
                             "request's first bytes) before it is closed (env CATDOG_HEADER_TIMEOUT_S)")
    parser.add_argument("--body-timeout", type=float, default=float(env("CATDOG_BODY_TIMEOUT_S", 60)),
                        help="seconds a request body may take to arrive whole; slower ones get 408 and the "
                             "connection is closed (env CATDOG_BODY_TIMEOUT_S)")
    parser.add_argument("--max-instances", type=int, default=int(env("CATDOG_MAX_INSTANCES", 32)),
                        help="most images in one request (env CATDOG_MAX_INSTANCES)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="decompression-bomb ceiling: larger images are refused")
    parser.add_argument("--threads", type=int, default=int(env("CATDOG_THREADS", 0)) or None,
                        help="inference threads (each runs ONNX Runtime with one intra-op thread); "
                             "default: the CPUs available (env CATDOG_THREADS)")
    parser.add_argument("--reload-interval", type=float, default=float(env("CATDOG_RELOAD_INTERVAL", 5)),
                        help="seconds between checks of the champion alias; 0 = never reload")
    parser.add_argument("--predict-route", default=env("AIP_PREDICT_ROUTE"),
                        help="extra predict route in Vertex's format (env AIP_PREDICT_ROUTE)")
    parser.add_argument("--health-route", default=env("AIP_HEALTH_ROUTE"),
                        help="extra readiness route (env AIP_HEALTH_ROUTE)")
    parser.add_argument("--log-level", default=env("CATDOG_LOG_LEVEL", "info"),
                        choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--logger-url", default=env("LOGGER_URL") or None,
                        help="send every inference's request and answer as KServe payload-logger CloudEvents to "
                             "this URL, e.g. the feedback app's http://127.0.0.1:8000/api/events/inference; token: "
                             "env LOGGER_TOKEN, else APP_TOKEN (env LOGGER_URL; default: off)")
    parser.add_argument("--logger-queue", type=int, default=int(env("LOGGER_QUEUE_SIZE", 100)),
                        help="events waiting to be sent; more are dropped and counted (env LOGGER_QUEUE_SIZE)")
    parser.add_argument("--inference-service", default=env("INFERENCE_SERVICE", "catdog"),
                        help="the name the logger's events give as ce-inferenceservicename (env INFERENCE_SERVICE)")
    parser.add_argument("--access-log", action="store_true", help="log every request (off: /metrics counts them)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from catdog.registry import RegistryError
    from serving.source import ModelSource

    try:  # before importing KServe (seconds): a wrong --model fails at once
        source = ModelSource(args.model, args.registry)
    except (RegistryError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    from catdog.body_limit import header_timeout_protocol
    from serving.app import create_app
    from serving.kserve_model import CatDogModel
    payload_logger = None
    if args.logger_url:
        from serving.payload_logger import PayloadLogger, redact_url, token_from_environment

        payload_logger = PayloadLogger(args.logger_url, token_from_environment(os.environ),
                                       inference_service=args.inference_service,
                                       source=f"http://{args.host}:{args.port}", queue_size=args.logger_queue)
        payload_logger.start()
    model = CatDogModel(source, name=args.model_name, max_instances=args.max_instances, max_pixels=args.max_pixels,
                        inference_threads=args.threads, reload_interval=args.reload_interval)
    app = create_app(model, max_body_bytes=args.max_body_bytes, body_timeout_s=args.body_timeout,
                     vertex_predict_route=args.predict_route, vertex_health_route=args.health_route,
                     payload_logger=payload_logger)
    model.start()  # loads in the background: live at once, ready (200) once the model is loaded
    logging.getLogger("catdog.serving").info(
        "model %r from %s; http://%s:%d/v1/models/%s:predict, /v2/models/%s/infer%s",
        args.model_name, source.describe(), args.host, args.port, args.model_name, args.model_name,
        f", Vertex {args.predict_route}" if args.predict_route else "")
    if payload_logger is not None:  # the URL without user:password@ (no token is ever printed)
        logging.getLogger("catdog.serving").info("payload logging to %s", redact_url(args.logger_url))
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                            access_log=args.access_log, timeout_keep_alive=65, timeout_graceful_shutdown=30,
                            http=header_timeout_protocol(args.header_timeout))
    try:
        uvicorn.Server(config).run()
    finally:
        model.stop()
        if payload_logger is not None:
            payload_logger.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
