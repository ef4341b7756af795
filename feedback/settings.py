"""The app's settings: one typed object, read from the environment (and `python -m feedback.web.server` flags).

Secrets: APP_TOKEN is a SecretStr; a PREDICTOR_URL may carry user:password@, which the app sends
as HTTP basic auth and never shows: redact() is the one helper that strips them from any URL or
message before it reaches an answer, a page or a log line.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit
from typing import Annotated, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from catdog.body_limit import HEADER_TIMEOUT_S
from catdog.preprocessing import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE
from feedback.web.rate_limit import OFF, parse_rate

MiB = 1024 * 1024
DEFAULT_DATA_DIR = "feedback_data"
# environment variable -> field
ENVIRONMENT = {
    "APP_HOST": "host",
    "APP_PORT": "port",
    "PREDICTOR_URL": "predictor_url",
    "PREDICTOR_MODEL": "predictor_model",
    "PREDICTOR_PROTOCOL": "predictor_protocol",
    "PREDICTOR_TIMEOUT_S": "predictor_timeout_s",
    "DATABASE_URL": "database_url",
    "FEEDBACK_URI": "feedback_uri",
    "APP_TOKEN": "app_token",
    "LABELS": "labels",
    "MAX_PHOTO_BYTES": "max_photo_bytes",
    "MAX_REQUEST_BYTES": "max_request_bytes",
    "REPAIR_INTERVAL_S": "repair_interval_s",
    "RUNS_DIR": "runs_dir",
    "RETRAIN_MIN_NEW": "retrain_min_new",
    "RETRAIN_CHECK_INTERVAL_S": "retrain_check_interval_s",
    "RUN_POLL_INTERVAL_S": "run_poll_interval_s",
    "MAX_PIXELS": "max_pixels",
    "HEADER_TIMEOUT_S": "header_timeout_s",
    "BODY_TIMEOUT_S": "body_timeout_s",
    "READY_TIMEOUT_S": "ready_timeout_s",
    "LOGGER_TOKEN": "logger_token",
    "LOGGER_MAX_BODY_BYTES": "logger_max_body_bytes",
    "LOGGER_PAIR_TIMEOUT_S": "logger_pair_timeout_s",
    "LOGGER_MAX_PENDING": "logger_max_pending",
    "RATE_LIMIT_WRITES": "rate_limit_writes",
    "RATE_LIMIT_READS": "rate_limit_reads",
    "RATE_LIMIT_EXEMPT": "rate_limit_exempt",
    "TRUSTED_PROXIES": "trusted_proxies",
    "PROMETHEUS_URL": "prometheus_url",
    "TRENDS_INTERVAL_S": "trends_interval_s",
    "REVIEW_ORDER": "review_order",
    "SECOND_OPINION_CONFIDENCE": "second_opinion_confidence",
}
# the review queue's orders (feedback.store.queries.review_queue); the first is the default
ReviewOrder = Literal["least_confident", "random", "ood_first", "newest", "diverse", "training_suspects_first"]
REVIEW_ORDERS: tuple[str, ...] = get_args(ReviewOrder)
# A photo's pixels bound what checking it costs (decoded RGB: 3 bytes a pixel, 48 MB at 16 MP),
# whatever its size in bytes: 16 MP holds a 12 MP phone photo; ingest and the predictor keep
# catdog.preprocessing's 40 MP ceiling, so whatever the app accepts they accept too.
APP_MAX_PIXELS = 16_000_000
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@")


class SettingsError(ValueError):
    """An invalid setting; the message names the environment variable."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    predictor_url: str = "http://127.0.0.1:8080"
    predictor_model: str = "catdog"
    predictor_protocol: Literal["kserve", "vertex"] = "kserve"
    predictor_timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    database_url: str = f"sqlite:///{DEFAULT_DATA_DIR}/feedback.db"
    feedback_uri: str = DEFAULT_DATA_DIR
    app_token: SecretStr | None = None
    labels: tuple[str, ...] = ("cat", "dog")
    # 7 MiB: sent base64-encoded (4/3 larger), a photo must fit the predictor's 10 MiB body limit
    max_photo_bytes: Annotated[int, Field(ge=1)] = 7 * MiB
    max_request_bytes: Annotated[int, Field(ge=1)] = 200 * MiB  # a zip of class folders for upload-data
    max_pixels: Annotated[int, Field(ge=1, le=DEFAULT_MAX_PIXELS)] = APP_MAX_PIXELS
    min_image_side: Annotated[int, Field(ge=1)] = DEFAULT_MIN_SIDE
    repair_interval_s: Annotated[float, Field(ge=0)] = 60.0  # 0: repair at start-up only
    # retraining (feedback/retraining/runs.py): local runs' logs and results; the automatic trigger
    runs_dir: str = f"{DEFAULT_DATA_DIR}/runs"
    retrain_min_new: Annotated[int, Field(ge=0)] = 100  # photos validated since the last run; 0 = never automatic
    retrain_check_interval_s: Annotated[float, Field(gt=0)] = 300.0
    run_poll_interval_s: Annotated[float, Field(gt=0)] = 5.0
    # slow clients: a request's headers, then its whole body, must arrive within these
    header_timeout_s: Annotated[float, Field(gt=0, le=3600)] = HEADER_TIMEOUT_S
    body_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 120.0  # a 200 MB zip at 1.7 MB/s
    # /ready and /api/status wait at most this long for the database and the predictor
    ready_timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    # the KServe payload logger's sink (feedback/labelling/endpoint_events.py): its own token (else APP_TOKEN),
    # the cap of one event's body, how long a request waits for its response (and back), how many wait
    logger_token: SecretStr | None = None
    logger_max_body_bytes: Annotated[int, Field(ge=1)] = 16 * MiB
    logger_pair_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    logger_max_pending: Annotated[int, Field(ge=1)] = 256
    # per-client rate limits (feedback/web/rate_limit.py): COUNT/UNIT, several joined by ';', or "off" (or "0")
    rate_limit_writes: str = "100/minute"  # POST, PUT, PATCH, DELETE: the older service's 100 a minute
    rate_limit_reads: str = "600/minute"  # everything else: a page loads its scripts and styles, the dashboard polls
    # paths never limited (a path is exempt when it is one of these or under it); the payload-logger
    # sink under /api/events/ authenticates its own client (its token)
    rate_limit_exempt: tuple[str, ...] = ("/health", "/ready", "/metrics", "/api/events/")
    # proxies (addresses or networks) whose X-Forwarded-For names the client; none: the peer is the client
    trusted_proxies: tuple[str, ...] = ()
    # the dashboard's trends (feedback/monitoring/trends.py): from this Prometheus when set, else from the
    # app's own scrapes every trends_interval_s, a day of them kept in memory (5 s: 17281 per service)
    prometheus_url: str = ""
    trends_interval_s: Annotated[float, Field(ge=5, le=600)] = 30.0
    # the review queue's order when a request names none (bench/active.py measures them: docs/BENCHMARKS.md)
    review_order: ReviewOrder = "least_confident"
    # the second-opinion queue (feedback/store/consensus_queries.py) also offers photos one person judged
    # while the model's confidence was below this (contested photos are offered whatever the confidence)
    second_opinion_confidence: Annotated[float, Field(ge=0, le=1)] = 0.8

    @field_validator("labels", mode="before")
    @classmethod
    def _split_labels(cls, value):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return tuple(value)

    @field_validator("labels")
    @classmethod
    def _two_or_more_labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) < 2 or len(set(value)) != len(value):
            raise ValueError(f"need two or more distinct labels, got {list(value)}")
        bad = [v for v in value if not v.replace("_", "").replace("-", "").isalnum()]
        if bad:  # labels name folders of the dataset
            raise ValueError(f"labels may hold letters, digits, '-' and '_' only: {bad}")
        return value

    @field_validator("rate_limit_writes", "rate_limit_reads")
    @classmethod
    def _rate(cls, value: str) -> str:
        parse_rate(value)  # ValueError: what is wrong with it
        return "off" if value.strip().lower() in OFF else value.strip()

    @field_validator("rate_limit_exempt", "trusted_proxies", mode="before")
    @classmethod
    def _split_list(cls, value):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return tuple(value)

    @field_validator("rate_limit_exempt")
    @classmethod
    def _paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if not v.startswith("/")]
        if bad:
            raise ValueError(f"paths must start with '/': {bad}")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for proxy in value:
            if proxy != "*":
                try:
                    ipaddress.ip_network(proxy)
                except ValueError:
                    raise ValueError(f"{proxy!r} is not an IP address or network (e.g. 10.0.0.0/8), nor '*'") from None
        return value

    @field_validator("predictor_url", "prometheus_url")
    @classmethod
    def _http_url(cls, value: str, info) -> str:
        if info.field_name == "prometheus_url" and value == "":
            return value  # not set: the trends come from the app's own scrapes
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("app_token", "logger_token")
    @classmethod
    def _no_empty_token(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None

    @model_validator(mode="after")
    def _token_to_bind_other_addresses(self) -> Settings:
        if not is_loopback(self.host) and self.app_token is None:
            raise ValueError(f"APP_TOKEN must be set to bind {self.host!r}: anyone who reaches the address "
                             "could change the data (validations, uploads) otherwise")
        return self

    @property
    def auth_required(self) -> bool:
        return self.app_token is not None

    @property
    def predictor_base_url(self) -> str:
        """PREDICTOR_URL without user:password@ (what the app calls, shows and logs)."""
        return redact(self.predictor_url)

    @property
    def predictor_auth(self) -> tuple[str, str] | None:
        """The user and password of PREDICTOR_URL, for HTTP basic auth (None without)."""
        parts = urlsplit(self.predictor_url)
        if parts.username is None and parts.password is None:
            return None
        return unquote(parts.username or ""), unquote(parts.password or "")

    def __repr_args__(self):  # no password of a URL in a logged or printed Settings
        for name, value in super().__repr_args__():
            yield name, redact(value) if name in ("predictor_url", "database_url", "prometheus_url") else value


def redact(text: str) -> str:
    """`text` with the user:password@ of every URL in it removed."""
    return _USERINFO.sub(r"\1", text)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(environ: Mapping[str, str] | None = None, **overrides) -> Settings:
    """Settings from the environment (names in ENVIRONMENT), then `overrides` (None = not given)."""
    environ = os.environ if environ is None else environ
    values = {field: environ[name] for name, field in ENVIRONMENT.items() if environ.get(name, "") != ""}
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        names = {field: name for name, field in ENVIRONMENT.items()}
        problems = []
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"][:1])
            where = names.get(field, field) if field else ""
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        raise SettingsError("invalid setting(s): " + "; ".join(problems)) from None
