"""`make app`: the feedback app on 127.0.0.1:8000 (uvicorn).

    python -m feedback.web.server [--host 127.0.0.1] [--port 8000] [--predictor-url URL]
                              [--database-url URL] [--feedback-uri DIR|gs://...]
                              [--rate-limit-writes RATE] [--rate-limit-reads RATE]
                              [--trusted-proxies ADDRESSES] [KEY=value ...]

Every setting also comes from the environment (feedback/settings.py: PREDICTOR_URL, DATABASE_URL,
FEEDBACK_URI, APP_TOKEN, ...); flags win. APP_TOKEN is read from the environment only, so it never
shows in a process list. Binding an address other than loopback needs APP_TOKEN. Before serving,
the database schema is migrated and interrupted dataset writes are repaired; a database that
cannot be reached or has a newer schema is an error here, not a half-working app.

Slow clients: a connection whose request headers are not complete within HEADER_TIMEOUT_S
(default 10 s) of its opening (or of a later request's first bytes) is closed; a request body that has not
arrived whole within BODY_TIMEOUT_S (default 120 s) is answered 408 and its connection closed.

Rate limits, per client address (feedback/web/rate_limit.py): RATE_LIMIT_WRITES (default
100/minute) for POST/PUT/PATCH/DELETE, RATE_LIMIT_READS (default 600/minute) for the rest, "off"
to turn one off; over it, 429 with Retry-After. RATE_LIMIT_EXEMPT: paths never limited (default
/health, /ready, /metrics, /api/events/). TRUSTED_PROXIES: proxies whose X-Forwarded-For names
the client (default none).

KEY=value words say where retraining runs go, as for `make run` (TARGET=local|kubeflow|vertex,
possibly several: TARGET=local,vertex; DATA, REGISTRY, OUTPUT_ROOT, WEIGHTS, the remote settings,
pipeline parameters): feedback/retraining/config.py.
"""

from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m feedback.web.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", help="address to bind (env APP_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (env APP_PORT; default 8000)")
    parser.add_argument("--predictor-url", help="the predictor's base URL (env PREDICTOR_URL; default http://127.0.0.1:8080)")
    parser.add_argument("--database-url", help="SQLAlchemy URL (env DATABASE_URL; default SQLite in feedback_data/)")
    parser.add_argument("--feedback-uri", help="folder or gs:// prefix for photos and the dataset (env FEEDBACK_URI)")
    parser.add_argument("--rate-limit-writes", metavar="RATE",
                        help="per client, for POST/PUT/PATCH/DELETE: e.g. 100/minute, or off (env RATE_LIMIT_WRITES; default 100/minute)")
    parser.add_argument("--rate-limit-reads", metavar="RATE",
                        help="per client, for every other request: e.g. 600/minute, or off (env RATE_LIMIT_READS; default 600/minute)")
    parser.add_argument("--trusted-proxies", metavar="ADDRESSES",
                        help="comma-separated proxy addresses or networks whose X-Forwarded-For names the client "
                             "(env TRUSTED_PROXIES; default none: the peer address is the client)")
    parser.add_argument("--prometheus-url", help="the dashboard's trends from this Prometheus (env PROMETHEUS_URL; "
                        "default: none, the app scrapes the predictor and itself)")
    parser.add_argument("--trends-interval-s", type=float, help="seconds between the app's own scrapes for the "
                        "trends, without Prometheus (env TRENDS_INTERVAL_S; default 30, 5 to 600)")
    parser.add_argument("training", nargs="*", metavar="KEY=value",
                        help="where retraining runs go, as for make run: TARGET=local DATA=... REGISTRY=... frozen_epochs=2")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return parser


def uvicorn_options(settings) -> dict:
    """uvicorn.Config options of the app's server: the header deadline (catdog.body_limit); the
    client address from X-Forwarded-For only when the peer is one of TRUSTED_PROXIES (uvicorn's
    own default trusts 127.0.0.1, which would let any local process pick its rate-limit key)."""
    from catdog.body_limit import header_timeout_protocol

    proxies = {"proxy_headers": True, "forwarded_allow_ips": list(settings.trusted_proxies)} \
        if settings.trusted_proxies else {"proxy_headers": False}
    return {"http": header_timeout_protocol(settings.header_timeout_s), "timeout_graceful_shutdown": 10, **proxies}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "httpx"):  # plugin set-up lines, one line per predictor call: noise
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from feedback.store.db import SchemaError
    from feedback.retraining.config import parse_training_words
    from feedback.settings import SettingsError, load_settings
    from pipelines.config import ConfigError

    try:
        settings = load_settings(host=args.host, port=args.port, predictor_url=args.predictor_url,
                                 database_url=args.database_url, feedback_uri=args.feedback_uri,
                                 rate_limit_writes=args.rate_limit_writes, rate_limit_reads=args.rate_limit_reads,
                                 trusted_proxies=args.trusted_proxies, prometheus_url=args.prometheus_url,
                                 trends_interval_s=args.trends_interval_s)
        training = parse_training_words(args.training, settings.feedback_uri)
    except (SettingsError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import uvicorn
    from sqlalchemy.exc import SQLAlchemyError

    from feedback.web.app import create_app
    from feedback.labelling.service import FeedbackService

    service = FeedbackService(settings, training=training)
    try:
        service.start()
    except (SchemaError, SQLAlchemyError, OSError) as exc:
        service.close()
        print(f"error: cannot open the store: {exc}", file=sys.stderr)
        return 2
    logging.getLogger("catdog.feedback").info(
        "feedback app on http://%s:%d (predictor %s, photos %s, schema %s, retraining on %s%s)", settings.host,
        settings.port, settings.predictor_base_url, settings.feedback_uri, service.schema_revision,
        ",".join(training.targets),
        ", token required for changes" if settings.auth_required else "")
    uvicorn.run(create_app(service), host=settings.host, port=settings.port, log_level=args.log_level,
                **uvicorn_options(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
