"""Several processes, one scrape: prometheus-client multiprocess mode through real servers."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from berth.registry import Registry
from tests.servers import berth_server
from tests.test_metrics import value

pytestmark = pytest.mark.e2e


def test_one_scrape_sees_every_process(examples_registry: Registry, tmp_path: Path) -> None:
    root = examples_registry.root
    example = examples_registry.card("regression").input_example
    shared = tmp_path / "prometheus-multiproc"
    shared.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared)}
    labels = {
        "model": "regression",
        "version": "1",
        "variant": "",
        "endpoint": "/predict",
        "status_class": "2xx",
    }
    with (
        berth_server(root, "regression", env=env) as first,
        berth_server(root, "regression", env=env) as second,
    ):
        for server, n in ((first, 5), (second, 3)):
            for _ in range(n):
                response = httpx.post(f"{server.url}/predict", json=example)
                assert response.status_code == 200
        assert httpx.post(f"{second.url}/predict", json={"features": [1]}).status_code == 422
        for server in (first, second):
            text = httpx.get(f"{server.url}/metrics").text
            assert value(text, "berth_requests_total", **labels) == 8
            assert value(text, "berth_requests_total", **{**labels, "status_class": "4xx"}) == 1
            assert value(text, "berth_request_duration_seconds_count", **labels) == 8
            assert value(text, "berth_prediction_rows_total", model="regression", version="1") == 8
            assert value(text, "berth_model_loaded", model="regression", version="1") == 1
            assert value(text, "berth_requests_in_flight") == 1  # this scrape, in one process
        second.process.terminate()
        second.process.wait(timeout=15)
        assert "Application shutdown complete" in second.log()
        text = httpx.get(f"{first.url}/metrics").text
        assert value(text, "berth_requests_total", **labels) == 8  # counters outlive a worker
        assert value(text, "berth_model_loaded", model="regression", version="1") == 1
    assert {p.name.split("_")[0] for p in shared.glob("*.db")} >= {"counter", "histogram"}
