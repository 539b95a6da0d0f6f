"""Prometheus metrics: exact counts after known traffic, labels, stages, fresh registry per app."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from berth.monitoring import store
from berth.monitoring.metrics import VALUE_BUCKETS, Metrics, observe_many
from berth.monitoring.summary import quantile
from berth.registry import Registry
from tests.conftest import ClientFactory
from tests.fakes import register_fake


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Exposition text as {(sample name, labels): value}."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


def test_request_counts_latency_and_stages_are_exact(
    registry: Registry, make_client: ClientFactory
) -> None:
    register_fake(registry, "adder", "sum")
    register_fake(registry, "parity", "parity")
    with make_client(registry, default_model="adder") as client:
        for _ in range(7):
            assert client.post("/predict", json={"features": [1, 2, 3]}).status_code == 200
        batch = {"instances": [[1, 1, 1], [1, 1, 2], [2, 2, 2]]}
        for _ in range(2):
            assert client.post("/models/parity/predict/batch", json=batch).status_code == 200
        assert client.post("/predict", json={"features": [1, 2]}).status_code == 422
        assert client.post("/models/nope/predict", json={}).status_code == 404
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    ok = {
        "model": "adder",
        "version": "1",
        "variant": "",
        "endpoint": "/predict",
        "status_class": "2xx",
    }
    assert value(text, "berth_requests_total", **ok) == 7
    assert value(text, "berth_request_duration_seconds_count", **ok) == 7
    assert value(text, "berth_requests_total", **{**ok, "status_class": "4xx"}) == 1
    parity = {
        "model": "parity",
        "version": "1",
        "variant": "",
        "endpoint": "/models/{name}/predict/batch",
        "status_class": "2xx",
    }
    assert value(text, "berth_requests_total", **parity) == 2
    unknown = {"model": "", "version": "", "variant": "", "endpoint": "/models/{name}/predict"}
    assert value(text, "berth_requests_total", **unknown, status_class="4xx") == 1
    for stage in ("decode", "predict", "encode"):
        count = value(
            text, "berth_stage_duration_seconds_count", model="adder", version="1", stage=stage
        )
        assert count == 7, stage
    assert value(text, "berth_predictions_total", model="adder", version="1", outcome="ok") == 7
    assert (
        value(text, "berth_predictions_total", model="adder", version="1", outcome="invalid_input")
        == 1
    )
    assert value(text, "berth_prediction_rows_total", model="parity", version="1") == 6
    # sums 3, 4, 6 -> odd, even, even, twice
    classes = {"model": "parity", "version": "1"}
    assert value(text, "berth_predicted_class_total", **classes, **{"class": "even"}) == 4
    assert value(text, "berth_predicted_class_total", **classes, **{"class": "odd"}) == 2
    # the regression value histogram: 7 predictions of 6.0
    assert value(text, "berth_prediction_value_count", model="adder", version="1") == 7
    # (no _sum: prometheus-client leaves it out of histograms with negative buckets)
    assert value(text, "berth_prediction_value_bucket", model="adder", version="1", le="5.0") == 0
    assert value(text, "berth_prediction_value_bucket", model="adder", version="1", le="10.0") == 7
    assert value(text, "berth_model_loaded", model="adder", version="1") == 1
    assert value(text, "berth_model_load_duration_seconds_count", model="parity", version="1") == 1
    assert value(text, "berth_requests_in_flight") == 1  # the scrape itself


def test_every_name_follows_the_conventions(registry: Registry, make_client: ClientFactory) -> None:
    register_fake(registry, "adder")
    with make_client(registry) as client:
        client.post("/predict", json={"features": [1, 2, 3]})
        text = client.get("/metrics").text
    names = {
        family.name
        for family in text_string_to_metric_families(text)
        if not family.name.startswith(("process_", "python_"))
    }
    assert names, text
    for name in names:
        assert re.fullmatch(r"berth_[a-z_]+", name), name
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types["berth_requests"] == "counter"
    assert types["berth_request_duration_seconds"] == "histogram"
    assert types["berth_batch_queue_wait_seconds"] == "histogram"
    assert types["berth_batch_size_rows"] == "histogram"


def test_each_app_gets_a_fresh_registry(registry: Registry, make_client: ClientFactory) -> None:
    register_fake(registry, "adder")
    with make_client(registry) as first:
        first.post("/predict", json={"features": [1, 2, 3]})
    with make_client(registry) as second:
        text = second.get("/metrics").text
    labels = {
        "model": "adder",
        "version": "1",
        "variant": "",
        "endpoint": "/predict",
        "status_class": "2xx",
    }
    assert value(text, "berth_requests_total", **labels) == 0


def test_model_failure_counts_as_5xx(registry: Registry, make_client: ClientFactory) -> None:
    register_fake(registry, "broken", "failing")
    with make_client(registry) as client:
        assert client.post("/predict", json={"features": [1, 2, 3]}).status_code == 500
        text = client.get("/metrics").text
    assert (
        value(
            text,
            "berth_requests_total",
            model="broken",
            version="1",
            variant="",
            endpoint="/predict",
            status_class="5xx",
        )
        == 1
    )
    assert (
        value(text, "berth_predictions_total", model="broken", version="1", outcome="model_failed")
        == 1
    )


def test_quantile_interpolates_like_promql() -> None:
    buckets = [(0.1, 50.0), (0.2, 90.0), (0.5, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, buckets) == 0.1
    assert abs(quantile(0.7, buckets) - 0.15) < 1e-9  # type: ignore[operator]
    assert abs(quantile(0.99, buckets) - 0.47) < 1e-9  # type: ignore[operator]
    assert quantile(0.5, []) is None


def test_metrics_objects_are_independent() -> None:
    a, b = Metrics(), Metrics()
    a.requests.labels("m", "1", "", "/predict", "2xx").inc()
    assert b'berth_requests_total{endpoint="/predict"' not in b.render()
    assert b'berth_requests_total{endpoint="/predict"' in a.render()


def test_route_variants_label_metrics_and_the_prediction_log(
    registry: Registry, make_client: ClientFactory, tmp_path: Path
) -> None:
    register_fake(registry, "adder")  # version 1, production
    register_fake(registry, "adder", alias="candidate")  # version 2
    registry.set_route("adder", {"weights": {"production": 1, "candidate": 0}})
    state = tmp_path / "state"
    with make_client(registry, state_dir=state) as client:
        for _ in range(3):
            assert client.post("/predict", json={"features": [1, 2, 3]}).status_code == 200
        text = client.get("/metrics").text
    labels = {"model": "adder", "version": "1", "endpoint": "/predict", "status_class": "2xx"}
    assert value(text, "berth_requests_total", **labels, variant="production") == 3
    engine = store.create_store_engine(f"sqlite:///{state / 'predictions.db'}")
    rows = store.query(engine, model="adder", limit=None)
    engine.dispose()
    assert [r["variant"] for r in rows] == ["production"] * 3


def test_observe_many_counts_exactly_as_observe_does() -> None:
    def histogram(name: str) -> Histogram:
        return Histogram(name, "x", ["m"], registry=CollectorRegistry(), buckets=VALUE_BUCKETS)

    one_by_one, in_bulk = histogram("one_seconds"), histogram("bulk_seconds")
    amounts = np.array([-1e9, -5.0, -0.01, 0.0, 0, 0.01, 0.011, 2.5, 2.5, 7.0, 5e5, 1e12, math.inf])
    for amount in amounts.tolist():
        one_by_one.labels("a").observe(amount)
    observe_many(in_bulk.labels("a"), amounts)
    observe_many(in_bulk.labels("a"), np.array([]))

    def samples(histogram: Histogram) -> list[tuple[str, dict[str, str], float]]:
        [family] = histogram.collect()
        kept = [s for s in family.samples if not s.name.endswith("_created")]
        return [(s.name.split("_", 1)[1], s.labels, s.value) for s in kept]

    assert samples(in_bulk) == samples(one_by_one)
    assert ("seconds_count", {"m": "a"}, len(amounts)) in samples(in_bulk)
