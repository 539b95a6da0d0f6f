"""Tracing in-process: spans into an in-memory exporter; names, parents, attributes, the caller's trace."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from berth.dataplane import DataPlane
from berth.monitoring.monitor import Monitor
from berth.monitoring.tracing import Tracing
from berth.registry import Registry
from berth.server import create_app
from berth.settings import Settings
from tests.fakes import register_fake

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"

Traced = Callable[..., AbstractContextManager[tuple[TestClient, InMemorySpanExporter]]]


@pytest.fixture
def traced() -> Traced:
    """`with traced(registry, **settings) as (client, exporter):` an app whose spans end up in
    `exporter`."""

    @contextmanager
    def factory(
        registry: Registry, **overrides: Any
    ) -> Iterator[tuple[TestClient, InMemorySpanExporter]]:
        exporter = InMemorySpanExporter()
        settings = Settings(registry=registry.root, prediction_log=False, **overrides)
        monitor = Monitor(settings, tracing=Tracing("otlp", exporter=exporter))
        app = create_app(settings, DataPlane(Registry(registry.root), settings, monitor))
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client, exporter

    return factory


def servers(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]


def children(exporter: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    found = [
        s
        for s in exporter.get_finished_spans()
        if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]
    return sorted(found, key=lambda s: (s.start_time or 0, s.end_time or 0))


def test_predict_span_continues_the_callers_trace(registry: Registry, traced: Traced) -> None:
    register_fake(registry, "adder", "sum")
    with traced(registry) as (client, exporter):
        response = client.post(
            "/predict",
            json={"features": [1, 2, 3]},
            headers={"traceparent": TRACEPARENT, "X-Request-ID": "req-1"},
        )
        assert response.status_code == 200
    [server] = servers(exporter)
    assert server.name == "POST /predict"
    assert server.context.trace_id == int(TRACE_ID, 16)
    assert server.parent is not None and server.parent.span_id == int(CALLER_SPAN, 16)
    assert server.parent.is_remote
    attributes = dict(server.attributes or {})
    assert attributes == {
        "http.request.method": "POST",
        "url.path": "/predict",
        "url.scheme": "http",
        "client.address": "testclient",
        "http.route": "/predict",
        "http.response.status_code": 200,
        "berth.request_id": "req-1",
        "berth.model": "adder",
        "berth.version": "1",
        "berth.outcome": "ok",
    }
    assert server.status.status_code is StatusCode.UNSET
    stages = children(exporter, server)
    assert [s.name for s in stages] == [
        "berth.decode",
        "berth.queue",
        "berth.predict",
        "berth.encode",
    ]
    decode, queue, predict, encode = stages
    assert {s.context.trace_id for s in stages} == {int(TRACE_ID, 16)}
    assert all(s.kind is SpanKind.INTERNAL for s in stages)
    assert all(dict(s.attributes or {})["berth.model"] == "adder" for s in stages)
    assert dict(predict.attributes or {})["berth.batch.rows"] == 1
    assert dict(queue.attributes or {})["berth.batch.requests"] == 1
    # back to back, inside the server span
    assert server.start_time is not None and server.end_time is not None
    assert server.start_time <= (decode.start_time or 0)
    assert decode.end_time == queue.start_time
    assert queue.end_time == predict.start_time
    assert (predict.end_time or 0) <= (encode.start_time or 0)
    assert (encode.end_time or 0) <= server.end_time
    resource = dict(server.resource.attributes)
    assert resource["service.name"] == "berth"
    assert resource["service.version"]


def test_a_trace_starts_here_without_traceparent(registry: Registry, traced: Traced) -> None:
    register_fake(registry, "adder", "sum")
    with traced(registry, batching=False) as (client, exporter):
        batch = {"instances": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}
        assert client.post("/models/adder/predict/batch", json=batch).status_code == 200
        assert client.get("/health").status_code == 200
        assert client.get("/models").status_code == 200
    predict_server, models = servers(exporter)  # probes such as /health are not traced
    assert predict_server.parent is None
    assert predict_server.name == "POST /models/{name}/predict/batch"
    stages = children(exporter, predict_server)
    assert [s.name for s in stages] == ["berth.decode", "berth.predict", "berth.encode"]
    assert "berth.batch.rows" not in dict(stages[1].attributes or {})  # batching is off
    assert models.name == "GET /models"
    assert dict(models.attributes or {})["http.route"] == "/models"
    assert "berth.model" not in dict(models.attributes or {})
    assert children(exporter, models) == []


def test_requests_merged_in_one_batch_share_its_predict_times(
    registry: Registry, traced: Traced
) -> None:
    register_fake(registry, "slow", "slow", delay_s="0.3")
    with traced(registry, batch_max_wait_ms=50) as (client, exporter):

        def call(i: int) -> int:
            body = {"features": [i, 0, 0]}
            return client.post("/models/slow/predict", json=body).status_code

        with ThreadPoolExecutor(5) as pool:
            assert list(pool.map(call, range(5))) == [200] * 5
    predicts = [s for s in exporter.get_finished_spans() if s.name == "berth.predict"]
    assert len(predicts) == 5
    # the first runs alone while the model is idle; the others queue behind it and merge
    by_batch: dict[tuple[int | None, int | None], list[ReadableSpan]] = {}
    for span in predicts:
        by_batch.setdefault((span.start_time, span.end_time), []).append(span)
    merged = max(by_batch.values(), key=len)
    assert len(merged) > 1
    sizes = {dict(s.attributes or {})["berth.batch.requests"] for s in merged}
    assert sizes == {len(merged)}
    assert {dict(s.attributes or {})["berth.batch.rows"] for s in merged} == {len(merged)}
    assert len({s.context.trace_id for s in merged}) == len(merged)  # one trace per request


def test_failures_and_unknown_models(registry: Registry, traced: Traced) -> None:
    register_fake(registry, "adder", "sum")
    register_fake(registry, "failing", "failing")
    with traced(registry) as (client, exporter):
        assert (
            client.post("/models/failing/predict", json={"features": [1, 2, 3]}).status_code == 500
        )
        assert client.post("/models/nope/predict", json={"features": [1]}).status_code == 404
        assert client.post("/models/adder/predict", json={"features": [1]}).status_code == 422
    failed, unknown, invalid = servers(exporter)
    assert failed.status.status_code is StatusCode.ERROR
    assert dict(failed.attributes or {})["error.type"] == "500"
    assert dict(failed.attributes or {})["berth.outcome"] == "model_failed"
    assert dict(failed.attributes or {})["berth.model"] == "failing"
    assert children(exporter, failed) == []
    assert unknown.status.status_code is StatusCode.UNSET  # a client error is not the server's
    assert dict(unknown.attributes or {})["http.response.status_code"] == 404
    assert dict(unknown.attributes or {})["http.route"] == "/models/{name}/predict"
    assert "berth.model" not in dict(unknown.attributes or {})
    assert dict(invalid.attributes or {})["berth.outcome"] == "invalid_input"


def test_the_route_variant_is_an_attribute(registry: Registry, traced: Traced) -> None:
    register_fake(registry, "adder")  # version 1, production
    register_fake(registry, "adder", alias="candidate")  # version 2
    registry.set_route("adder", {"weights": {"production": 0, "candidate": 1}})
    with traced(registry) as (client, exporter):
        assert client.post("/predict", json={"features": [1, 2, 3]}).status_code == 200
    [server] = servers(exporter)
    attributes = dict(server.attributes or {})
    assert (attributes["berth.variant"], attributes["berth.version"]) == ("candidate", "2")


def test_standard_otel_variables_apply(
    registry: Registry, traced: Traced, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_fake(registry, "adder", "sum")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "fraud-scoring")
    with traced(registry) as (client, exporter):
        assert client.post("/predict", json={"features": [1, 2, 3]}).status_code == 200
    [server] = servers(exporter)
    assert server.resource.attributes["service.name"] == "fraud-scoring"
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    with traced(registry) as (client, exporter):
        assert client.post("/predict", json={"features": [1, 2, 3]}).status_code == 200
    assert exporter.get_finished_spans() == ()
