"""The predictor, over REST: the app never loads a model itself.

Two protocols (PREDICTOR_PROTOCOL):
- kserve (default): our KServe predictor, `make serve` or an InferenceService, at PREDICTOR_URL:
  POST /v1/models/<model>:predict and :explain ({"instances": [{"image_bytes": {"b64": ...}}]}),
  GET /v2/models/<model>/ready and /v2/models/<model> (metadata: version, class names).
- vertex: a Vertex AI endpoint serving the same container, PREDICTOR_URL =
  https://REGION-aiplatform.googleapis.com/v1/projects/P/locations/R/endpoints/E; POST <url>:predict
  with a Google OAuth token (Application Default Credentials); the model version is the answer's
  modelVersionId. Vertex's :explain needs an explanation spec, so the app asks no explanation there.
Out-of-distribution (models exported with a score; absent from older ones, which keep serving):
a V1 (and Vertex) prediction may carry "ood_score" (a number) and "neither" (a bool: the model's
flag, this photo may be neither label); the answer's ood_score/neither are None when absent, and
a present field of another type is a bad_answer. The app asks only V1 (and Vertex) :predict; the
V2 outputs `ood_score` and `neither` hold the same. The model's threshold comes from the V2
metadata's parameters "ood" {"method", "threshold", ...} when the predictor gives it
(PredictorStatus.ood; the service copies it onto predictions of that model version).
Embedding: every V1/Vertex request carries "parameters": {"embedding": true}; a model that has the
output (catdog.model.FeatureEmbedding) answers "embedding": [floats] (PredictorAnswer.embedding,
stored with the prediction for the diverse review order), an older model answers without it (None).
Every failure is a PredictorError carrying the HTTP status the app should answer with (503 when
the predictor is down, slow or not ready; 422 when it refused the photo; 502 for a broken answer).
A PREDICTOR_URL with user:password@ is called with HTTP basic auth; `url` and every message
name it without them (feedback.settings.redact).
"""

from __future__ import annotations

import base64
import math
import threading
import time
import uuid
from dataclasses import dataclass

import httpx

from feedback.settings import Settings, redact

OWN_EVENT_PREFIX = "catdog-feedback-"  # the Ce-Id of the app's own calls to the predictor
VERTEX_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
STATUS_TIMEOUT_S = 3.0


class PredictorError(RuntimeError):
    """`kind`: unreachable (down or slow), not_ready, refused (the photo), too_large (for the
    predictor's body limit), bad_answer, unsupported (e.g. explanations from Vertex)."""

    STATUS = {"unreachable": 503, "not_ready": 503, "refused": 422, "too_large": 413, "bad_answer": 502,
              "unsupported": 501}

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind

    @property
    def status(self) -> int:
        return self.STATUS[self.kind]


@dataclass(frozen=True)
class PredictorAnswer:
    """What the predictor said about one photo (PredictorClient.predict); the store keeps it as a prediction."""

    label: str
    probabilities: dict[str, float]
    model_name: str
    model_version: str | None
    latency_s: float
    explanation: dict | None = None
    ood_score: float | None = None  # None: the model has no out-of-distribution score
    neither: bool | None = None  # the model's flag: this photo may be neither label
    ood_threshold: float | None = None  # the model's threshold on ood_score, when its metadata says
    embedding: tuple[float, ...] | None = None  # the model's embedding of the photo (diverse review order), if it has one


@dataclass(frozen=True)
class PredictorStatus:
    url: str
    protocol: str
    reachable: bool
    ready: bool
    model_version: str | None = None
    class_names: list[str] | None = None
    error: str | None = None
    explanations: bool = True
    ood: dict | None = None  # the model's out-of-distribution method and threshold (V2 metadata), if given

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class GoogleToken:
    """A bearer token from Application Default Credentials, refreshed when it expires."""

    def __init__(self, credentials=None):
        self._credentials = credentials
        self._lock = threading.Lock()

    def __call__(self) -> str:
        import google.auth
        import google.auth.transport.requests

        with self._lock:
            if self._credentials is None:
                self._credentials, _ = google.auth.default(scopes=list(VERTEX_SCOPES))
            if not self._credentials.valid:
                self._credentials.refresh(google.auth.transport.requests.Request())
            return self._credentials.token


class PredictorClient:
    def __init__(self, settings: Settings, token=None, transport: httpx.BaseTransport | None = None):
        self.url = settings.predictor_base_url  # without user:password@ (those go in the auth header)
        self.model = settings.predictor_model
        self.protocol = settings.predictor_protocol
        self.timeout_s = settings.predictor_timeout_s
        self._token = token or (GoogleToken() if self.protocol == "vertex" else None)
        self._http = httpx.Client(timeout=self.timeout_s, transport=transport, auth=settings.predictor_auth)

    def close(self) -> None:
        self._http.close()

    @property
    def explanations(self) -> bool:
        return self.protocol == "kserve"

    def _headers(self) -> dict[str, str]:
        # Ce-Id: a payload logger (KServe's agent, serving.payload_logger) names its events after it,
        # so the app's sink (feedback/labelling/endpoint_events.py) knows the app's own calls, stored already
        own = {"Ce-Id": f"{OWN_EVENT_PREFIX}{uuid.uuid4().hex}"}
        return {**own, "Authorization": f"Bearer {self._token()}"} if self._token else own

    def _call(self, method: str, url: str, timeout: float | None = None, **kwargs) -> httpx.Response:
        try:
            return self._http.request(method, url, headers=self._headers(), timeout=timeout or self.timeout_s, **kwargs)
        except httpx.TimeoutException:
            raise PredictorError(f"the predictor at {self.url} did not answer within {timeout or self.timeout_s:g} s "
                                 "(PREDICTOR_TIMEOUT_S)", "unreachable") from None
        except httpx.HTTPError as exc:
            raise PredictorError(f"the predictor at {self.url} is unreachable ({type(exc).__name__}: "
                                 f"{redact(str(exc))})", "unreachable") from None
        except Exception as exc:  # e.g. no Google credentials for a Vertex endpoint
            raise PredictorError(f"cannot call the predictor at {self.url}: {type(exc).__name__}: {redact(str(exc))}",
                                 "unreachable") from None

    def predict(self, image: bytes, explain: bool = False) -> PredictorAnswer:
        """One photo's label and probabilities (and explanation when asked and available)."""
        # parameters.embedding: the photo's embedding when the model has one (serving/kserve_model.py)
        body = {"instances": [{"image_bytes": {"b64": base64.b64encode(image).decode()}}],
                "parameters": {"embedding": True}}
        if self.protocol == "vertex":
            url = f"{self.url}:predict"
        else:
            url = f"{self.url}/v1/models/{self.model}:{'explain' if explain else 'predict'}"
        start = time.perf_counter()
        response = self._call("POST", url, json=body)
        latency = time.perf_counter() - start
        payload = self._json(response)
        try:
            (prediction,) = payload["predictions"]
            label, probabilities = prediction["label"], {k: float(v) for k, v in prediction["probabilities"].items()}
            if label not in probabilities:
                raise ValueError(f"label {label!r} is not among the probabilities")
            ood_score, neither = read_ood(prediction)
            embedding = read_embedding(prediction)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # e.g. probabilities as a list
            raise PredictorError(f"the predictor at {self.url} gave an answer the app cannot read "
                                 f"({type(exc).__name__}: {exc})", "bad_answer") from None
        explanation = prediction.get("explanation") if explain else None  # grad-cam, or occlusion for old models
        if explanation is not None and not isinstance(explanation, dict):
            raise PredictorError(f"the predictor at {self.url} gave an explanation the app cannot read", "bad_answer")
        if self.protocol == "vertex":
            version = payload.get("modelVersionId") or payload.get("deployedModelId")
            model_name = payload.get("model") or self.model
        else:
            version, model_name = response.headers.get("x-model-version"), self.model
        return PredictorAnswer(label, probabilities, model_name, version, latency, explanation,
                               ood_score=ood_score, neither=neither, embedding=embedding)

    def _json(self, response: httpx.Response) -> dict:
        if response.status_code == 400:  # the predictor refused the photo: say why
            raise PredictorError(f"the predictor refused the photo: {_error_text(response)}", "refused")
        if response.status_code == 413:
            raise PredictorError(f"the photo is too large for the predictor: {_error_text(response)}", "too_large")
        if response.status_code == 503:
            raise PredictorError(f"the predictor at {self.url} is not ready: {_error_text(response)}", "not_ready")
        if response.status_code != 200:
            raise PredictorError(f"the predictor at {self.url} answered HTTP {response.status_code}: "
                                 f"{_error_text(response)}", "bad_answer")
        try:
            return response.json()
        except ValueError:
            raise PredictorError(f"the predictor at {self.url} answered something that is not JSON",
                                 "bad_answer") from None

    def status(self, timeout: float = STATUS_TIMEOUT_S) -> PredictorStatus:
        """Reachable? Ready? Which model version and classes? Never raises; each call waits at most `timeout`."""
        base = dict(url=self.url, protocol=self.protocol, explanations=self.explanations)
        try:
            if self.protocol == "vertex":
                response = self._call("GET", self.url, timeout=timeout)
                payload = self._json(response)
                deployed = payload.get("deployedModels") or []
                return PredictorStatus(**base, reachable=True, ready=bool(deployed),
                                       model_version=deployed[0].get("modelVersionId") if deployed else None,
                                       error=None if deployed else "the endpoint has no deployed model")
            ready = self._call("GET", f"{self.url}/v2/models/{self.model}/ready", timeout=timeout)
            if ready.status_code != 200:
                return PredictorStatus(**base, reachable=True, ready=False, error=_error_text(ready))
            metadata = self._json(self._call("GET", f"{self.url}/v2/models/{self.model}", timeout=timeout))
            parameters = metadata.get("parameters") or {}
            versions = metadata.get("versions") or [None]
            ood = parameters.get("ood")
            return PredictorStatus(**base, reachable=True, ready=True,
                                   model_version=parameters.get("model_version") or versions[0],
                                   class_names=parameters.get("class_names"),
                                   ood=ood if isinstance(ood, dict) else None)
        except (AttributeError, TypeError, IndexError) as exc:  # metadata of an unexpected shape
            return PredictorStatus(**base, reachable=True, ready=False,
                                   error=f"the predictor's metadata cannot be read ({type(exc).__name__}: {exc})")
        except PredictorError as exc:
            return PredictorStatus(**base, reachable=exc.kind != "unreachable", ready=False, error=str(exc))


def _finite_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def read_ood(prediction: dict) -> tuple[float | None, bool | None]:
    """(ood_score, neither) of one V1/Vertex prediction; None for a field that is absent (or null);
    ValueError for a present field of another type (a bool is no score, 1 is no flag)."""
    score, flag = prediction.get("ood_score"), prediction.get("neither")
    if score is not None:
        if not _finite_number(score):
            raise ValueError(f"ood_score {score!r} is not a finite number")
        score = float(score)
    if flag is not None and not isinstance(flag, bool):
        raise ValueError(f"neither {flag!r} is not true or false")
    return score, flag


MAX_EMBEDDING_DIMS = 1024


def read_embedding(prediction: dict) -> tuple[float, ...] | None:
    """The "embedding" of one V1/Vertex prediction (a list of finite numbers), None when absent."""
    vector = prediction.get("embedding")
    if vector is None:
        return None
    if not isinstance(vector, list) or not 0 < len(vector) <= MAX_EMBEDDING_DIMS \
            or not all(_finite_number(v) for v in vector):
        raise ValueError(f"embedding is not a list of 1 to {MAX_EMBEDDING_DIMS} finite numbers")
    return tuple(float(v) for v in vector)


def ood_threshold(ood: dict | None) -> float | None:
    """The threshold of a model's "ood" metadata, when it is a finite number."""
    value = (ood or {}).get("threshold")
    if not _finite_number(value):
        return None
    return float(value)


def _error_text(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return redact(response.text[:300]) or f"HTTP {response.status_code}"
    if isinstance(payload, dict):
        return redact(str(payload.get("error") or payload.get("detail") or payload)[:300])
    return redact(str(payload)[:300])
