"""The V1 protocol (KServe, TF Serving) in-process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from berth.registry import Registry
from tests.conftest import ClientFactory


@pytest.fixture
def client(examples_registry: Registry, make_client: ClientFactory) -> Iterator[TestClient]:
    with make_client(examples_registry) as client:
        yield client


def test_models_and_readiness(client: TestClient) -> None:
    assert client.get("/v1/models").json() == {
        "models": ["injection", "intent", "regression", "tabular"]
    }
    assert client.get("/v1/models/intent").json() == {"name": "intent", "ready": True}
    client.post("/v2/repository/models/intent/unload")
    response = client.get("/v1/models/intent")
    assert response.status_code == 503
    assert response.json() == {"name": "intent", "ready": False}
    response = client.get("/v1/models/nope")
    assert response.status_code == 404
    assert set(response.json()) == {"error"}


def test_predict_text_instances(client: TestClient) -> None:
    response = client.post(
        "/v1/models/intent:predict",
        json={"instances": ["I want to cancel my subscription", {"text": "Great service!"}]},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": ["complaint", "praise"]}


def test_predict_tabular_inputs_and_versions(client: TestClient) -> None:
    example = client.get("/models/tabular").json()["input_example"]["features"]
    rows = [list(example.values()), example]
    by_instances = client.post("/v1/models/tabular:predict", json={"instances": rows}).json()
    by_inputs = client.post("/v1/models/tabular/versions/1:predict", json={"inputs": rows}).json()
    simple = client.post("/models/tabular/predict", json={"features": example}).json()
    assert by_instances == by_inputs == {"predictions": [simple["prediction"]] * 2}


def test_regression_predicts_values(client: TestClient) -> None:
    row = client.get("/models/regression").json()["input_example"]["features"]
    response = client.post("/v1/models/regression:predict", json={"instances": [row]})
    simple = client.post("/models/regression/predict", json={"features": row}).json()
    assert response.json() == {"predictions": [simple["prediction"]]}


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"rows": [1]}, 400, 'expected a JSON object with either "instances" or "inputs"'),
        (
            {"instances": ["a"], "inputs": ["b"]},
            400,
            'expected a JSON object with either "instances" or "inputs"',
        ),
        ({"instances": [[1.0, 2.0]]}, 400, "instances[0]: expected 10 features, got 2"),
    ],
)
def test_errors(client: TestClient, body: dict[str, object], status: int, error: str) -> None:
    response = client.post("/v1/models/regression:predict", json=body)
    assert response.status_code == status
    assert response.json() == {"error": error}
