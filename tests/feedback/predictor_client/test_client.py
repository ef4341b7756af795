"""The app's predictor client: KServe's V1 routes (tested for real in tests/feedback/web/test_api.py) and a
Vertex AI endpoint, here a loopback stand-in that checks the exact requests Vertex would get."""

from __future__ import annotations

import base64
import json

import pytest

from feedback.predictor_client.client import GoogleToken, PredictorClient, PredictorError
from tests.feedback_fixtures import feedback_settings, photo, running_app, stub_server

ENDPOINT_PATH = "/v1/projects/my-project/locations/europe-west4/endpoints/1234"


class VertexStandIn:
    """Answers like aiplatform.googleapis.com for one endpoint; records the requests."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict, bytes]] = []

    def __call__(self, method, path, headers, body):
        self.requests.append((method, path, headers, body))
        if headers.get("Authorization") != "Bearer ya29.test-token":
            return 401, {}, {"error": {"code": 401, "status": "UNAUTHENTICATED"}}
        if method == "POST" and path == f"{ENDPOINT_PATH}:predict":
            (instance,) = json.loads(body)["instances"]
            assert base64.b64decode(instance["image_bytes"]["b64"])[:2] == b"\xff\xd8"  # a JPEG, as sent
            assert json.loads(body)["parameters"] == {"embedding": True}  # Vertex passes parameters to the container
            return 200, {}, {"predictions": [{"label": "dog", "probabilities": {"cat": 0.2, "dog": 0.8},
                                              "embedding": [0.5, -1.25, 3.0]}],
                             "deployedModelId": "555", "model": "projects/1/locations/europe-west4/models/catdog",
                             "modelDisplayName": "catdog", "modelVersionId": "7"}
        if method == "GET" and path == ENDPOINT_PATH:
            return 200, {}, {"name": ENDPOINT_PATH[4:], "deployedModels": [{"id": "555", "modelVersionId": "7"}]}
        return 404, {}, {"error": {"code": 404}}


@pytest.fixture
def vertex(tmp_path):
    stand_in = VertexStandIn()
    with stub_server(stand_in) as base:
        settings = feedback_settings(tmp_path, base + ENDPOINT_PATH, predictor_protocol="vertex")
        yield stand_in, settings


def test_vertex_predict_sends_the_token_and_reads_the_model_version(vertex):
    stand_in, settings = vertex
    client = PredictorClient(settings, token=lambda: "ya29.test-token")
    answer = client.predict(photo(1), explain=True)  # Vertex gives no explanations: none asked
    assert (answer.label, answer.probabilities, answer.model_version) == ("dog", {"cat": 0.2, "dog": 0.8}, "7")
    assert answer.model_name == "projects/1/locations/europe-west4/models/catdog" and answer.explanation is None
    assert answer.embedding == (0.5, -1.25, 3.0)
    method, path, headers, _ = stand_in.requests[-1]
    assert (method, path) == ("POST", f"{ENDPOINT_PATH}:predict")
    status = client.status()
    assert status.ready and status.model_version == "7" and status.explanations is False
    client.close()


def test_vertex_without_credentials_is_a_clear_503(vertex):
    _, settings = vertex
    client = PredictorClient(settings, token=lambda: "wrong")
    with pytest.raises(PredictorError, match="answered HTTP 401") as error:
        client.predict(photo(1))
    assert error.value.status == 502

    def no_credentials():
        raise RuntimeError("Your default credentials were not found")

    with pytest.raises(PredictorError, match="default credentials were not found") as error:
        PredictorClient(settings, token=no_credentials).predict(photo(1))
    assert error.value.status == 503


def test_the_app_works_against_a_vertex_endpoint(vertex):
    _, settings = vertex
    with running_app(settings, predictor=PredictorClient(settings, token=lambda: "ya29.test-token")) as app:
        body = app.predict(photo(2)).json()
        assert body["predicted_class"] == "dog" and body["model_version"] == "7"
        assert app.post(f"/api/predictions/{body['id']}/explanation").status_code == 501  # none on Vertex
        assert app.get("/ready").status_code == 200


def test_google_token_refreshes_expired_credentials():
    class Credentials:
        def __init__(self):
            self.valid, self.token, self.refreshed = False, None, 0

        def refresh(self, request):
            self.valid, self.token, self.refreshed = True, f"token-{self.refreshed + 1}", self.refreshed + 1

    credentials = Credentials()
    token = GoogleToken(credentials)
    assert token() == "token-1" and token() == "token-1" and credentials.refreshed == 1
    credentials.valid = False  # expired
    assert token() == "token-2"


@pytest.mark.parametrize("embedding", ["abc", [], ["x"], [float("nan")], [True], [0.0] * 1025])
def test_an_embedding_that_is_not_a_list_of_numbers_is_a_bad_answer(embedding):
    from feedback.predictor_client.client import read_embedding

    with pytest.raises(ValueError, match="embedding"):
        read_embedding({"embedding": embedding})
    assert read_embedding({}) is None and read_embedding({"embedding": [1, 2.5]}) == (1.0, 2.5)
