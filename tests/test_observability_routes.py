"""The dashboard's data, the admin query route and their errors, in-process."""

from __future__ import annotations

import time

from berth.registry import Registry
from tests.conftest import ClientFactory
from tests.fakes import register_fake
from tests.servers import free_port


def test_dashboard_data(registry: Registry, make_client: ClientFactory) -> None:
    register_fake(registry, "adder")
    register_fake(registry, "broken", "failing")
    with make_client(registry, default_model="adder") as client:
        for _ in range(4):
            client.post("/predict", json={"features": [1, 2, 3]})
        client.post("/models/broken/predict", json={"features": [1, 2, 3]})
        data = client.get("/dashboard/data").json()
        page = client.get("/dashboard")
    assert page.status_code == 200 and "<title>Berth dashboard</title>" in page.text
    assert data["ready"] is True
    models = {m["name"]: m for m in data["models"]}
    assert set(models) == {"adder", "broken"}
    adder, broken = models["adder"], models["broken"]
    assert (adder["version"], adder["loaded"], adder["default"]) == (1, True, True)
    assert adder["totals"]["requests"] == 4 and adder["totals"]["errors"] == 0
    assert broken["totals"]["requests"] == 1 and broken["totals"]["errors"] == 1
    assert adder["totals"]["latency_buckets"][-1] == ["+Inf", 4.0]
    assert 0 < adder["totals"]["p50_s"] <= adder["totals"]["p99_s"]
    assert adder["drift"]["status"] == "no reference statistics"
    assert adder["route"] is None


def test_dashboard_data_shows_routes_and_unloads(
    registry: Registry, make_client: ClientFactory
) -> None:
    register_fake(registry, "adder")
    register_fake(registry, "adder", alias="candidate")
    registry.set_route("adder", {"weights": {"production": 9, "candidate": 1}})
    with make_client(registry) as client:
        data = client.get("/dashboard/data").json()
        before = client.get("/metrics").text
        assert client.post("/v2/repository/models/adder/unload").status_code == 200
        after = client.get("/metrics").text
    assert data["models"][0]["route"] == "production=9 candidate=1"
    assert 'berth_model_loaded{model="adder",version="2"} 1.0' in before
    assert 'berth_model_loaded{model="adder"' not in after  # unloaded on purpose: no series


def test_admin_predictions_filters(registry: Registry, make_client: ClientFactory) -> None:
    register_fake(registry, "adder")
    register_fake(registry, "parity", "parity")
    with make_client(registry, default_model="adder") as client:
        client.post("/predict", json={"features": [1, 2, 3]}, headers={"X-Request-ID": "one"})
        client.post("/models/parity/predict", json={"features": [1, 2, 3]})
        deadline = time.monotonic() + 10
        while client.get("/admin/predictions").json()["count"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        by_model = client.get("/admin/predictions", params={"model": "parity"}).json()
        by_id = client.get("/admin/predictions", params={"request_id": "one"}).json()
        future = client.get("/admin/predictions", params={"since": "2999-01-01"}).json()
        bad = client.get("/admin/predictions", params={"since": "soon"})
    assert [p["model"] for p in by_model["predictions"]] == ["parity"]
    assert by_model["predictions"][0]["outputs"]["predictions"] == ["even"]
    assert [p["request_id"] for p in by_id["predictions"]] == ["one"]
    assert future == {"predictions": [], "count": 0}
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_input"


def test_admin_predictions_when_the_store_is_down(
    registry: Registry, make_client: ClientFactory
) -> None:
    register_fake(registry, "adder")
    down = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
    with make_client(registry, prediction_store=down) as client:
        assert client.post("/predict", json={"features": [1, 2, 3]}).status_code == 200
        response = client.get("/admin/predictions")
    assert response.status_code == 503
    assert response.json()["code"] == "store_unavailable"
    assert "nobody" in response.json()["error"] and response.headers["retry-after"] == "1"
    # when off, the route says so
    with make_client(registry, prediction_log=False) as client:
        off = client.get("/admin/predictions")
    assert off.status_code == 404 and "BERTH_PREDICTION_LOG" in off.json()["error"]
