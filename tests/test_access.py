"""Every outcome of access control over HTTP: open mode, no key, bad key, revoked key, wrong
scope, other model, admin on loopback and not."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from berth.registry import Registry
from berth.security.keys import KeyStore, default_keys_path
from tests.conftest import ClientFactory
from tests.fakes import register_fake
from tests.servers import berth_server
from tests.test_metrics import value

ONE = {"features": [1.0, 2.0, 3.0]}


@pytest.fixture
def two_models(registry: Registry) -> Registry:
    register_fake(registry, "alpha")
    register_fake(registry, "beta")
    return registry


@pytest.fixture
def client(two_models: Registry, make_client: ClientFactory) -> Iterator[TestClient]:
    with make_client(two_models, default_model="alpha", client=("203.0.113.9", 4000)) as client:
        client.app.state.keys.check_interval_s = 0  # type: ignore[attr-defined]
        yield client


def _store(registry: Registry) -> KeyStore:
    return KeyStore(default_keys_path(registry.root), check_interval_s=0)


def test_open_mode_serves_inference_and_refuses_admin_off_loopback(client: TestClient) -> None:
    assert client.post("/predict", json=ONE).json()["prediction"] == 6.0
    assert client.post("/models/beta/predict", json=ONE).status_code == 200
    # this client calls from 203.0.113.9, not loopback
    response = client.get("/admin/security")
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert "only on loopback" in response.json()["error"]


def test_open_mode_refuses_a_key_it_does_not_know(client: TestClient) -> None:
    response = client.post("/predict", json=ONE, headers={"X-API-Key": "berth_abc_def"})
    assert response.status_code == 401
    assert response.json() == {
        "error": "unknown API key: this server has no API keys",
        "code": "unauthorized",
    }


def test_with_keys_every_outcome(client: TestClient, two_models: Registry) -> None:
    store = _store(two_models)
    _, any_model = store.create("all", "predict")
    _, beta_only = store.create("beta", "predict", model="beta")
    admin_key, admin = store.create("ops", "admin")

    def call(
        method: str, path: str, token: str | None = None, header: str = "bearer"
    ) -> httpx.Response:
        headers = {}
        if token is not None:
            headers = (
                {"Authorization": f"Bearer {token}"} if header == "bearer" else {"X-API-Key": token}
            )
        return client.request(method, path, json=ONE if method == "POST" else None, headers=headers)

    no_key = call("POST", "/predict")
    assert no_key.status_code == 401
    assert no_key.json()["code"] == "unauthorized"
    assert no_key.headers["www-authenticate"].startswith("Bearer")

    assert call("POST", "/predict", "berth_nothere_secret").status_code == 401
    assert call("POST", "/predict", any_model[:-2] + "xx").status_code == 401
    assert call("POST", "/predict", any_model).status_code == 200
    assert call("POST", "/models/beta/predict/batch", any_model, "x-api-key").status_code == 422

    assert call("POST", "/models/beta/predict", beta_only).status_code == 200
    assert call("GET", "/models/beta", beta_only, "x-api-key").status_code == 200
    other = call("POST", "/models/alpha/predict", beta_only)
    assert other.status_code == 403
    assert "predict on model 'alpha'" in other.json()["error"]
    assert call("POST", "/predict", beta_only).status_code == 403  # the default model is alpha

    wrong_scope = call("GET", "/admin/security", any_model)
    assert wrong_scope.status_code == 403
    assert wrong_scope.json()["code"] == "forbidden"
    status = call("GET", "/admin/security", admin)
    assert status.status_code == 200
    assert status.json()["api_keys"] == 3
    assert call("POST", "/models/alpha/predict", admin).status_code == 200

    # public paths need nothing, unknown paths stay 404
    assert call("GET", "/health").status_code == 200
    assert call("GET", "/ready").status_code == 200
    assert call("GET", "/openapi.json").status_code == 200
    assert call("GET", "/no/such/route").status_code == 404

    store.revoke(admin_key.id)
    revoked = call("GET", "/admin/security", admin)
    assert revoked.status_code == 401
    assert revoked.json()["error"] == "invalid or revoked API key"

    metrics = call("GET", "/metrics").text
    http = {"protocol": "http"}
    assert value(metrics, "berth_access_denied_total", reason="unauthorized", **http) == 4
    assert value(metrics, "berth_access_denied_total", reason="forbidden", **http) == 3


def test_openapi_documents_keys_and_errors(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert set(schema["components"]["securitySchemes"]) == {"BearerKey", "HeaderKey"}
    predict = schema["paths"]["/predict"]["post"]
    assert {"401", "403", "429", "503", "504"} <= set(predict["responses"])
    assert "security" not in schema["paths"]["/health"]["get"]


@pytest.mark.e2e
def test_admin_answers_on_loopback_until_a_key_exists(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    register_fake(registry, "alpha")
    with berth_server(registry.root) as server:
        assert httpx.get(f"{server.url}/admin/security").status_code == 200
        _, admin = _store(registry).create("ops", "admin")
        _, user = _store(registry).create("app", "predict")
        # the server notices the new file within its one-second reload interval
        for _ in range(30):
            response = httpx.get(f"{server.url}/admin/security")
            if response.status_code == 401:
                break
            time.sleep(0.1)
        assert response.status_code == 401
        headers = {"Authorization": f"Bearer {admin}"}
        assert httpx.get(f"{server.url}/admin/security", headers=headers).status_code == 200
        assert httpx.post(f"{server.url}/predict", json=ONE).status_code == 401
        ok = httpx.post(f"{server.url}/predict", json=ONE, headers={"X-API-Key": user})
        assert ok.status_code == 200
        assert ok.json()["prediction"] == 6.0
