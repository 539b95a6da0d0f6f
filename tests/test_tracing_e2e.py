"""End to end: a real `berth serve --workers 2 --grpc-port` exporting spans over OTLP/HTTP to a small
receiver this test runs on loopback; and, with tracing off, no tracing module loaded at all."""

from __future__ import annotations

import gzip
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.servers import berth_server, free_port

pytestmark = pytest.mark.e2e

SERVER_KIND = Span.SpanKind.SPAN_KIND_SERVER


@dataclass
class Received:
    """One span as the receiver decoded it."""

    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]


def _values(pairs: Any) -> dict[str, Any]:
    found = {}
    for pair in pairs:
        assert isinstance(pair, KeyValue)
        kind = pair.value.WhichOneof("value")
        found[pair.key] = getattr(pair.value, kind) if kind else None
    return found


class OtlpReceiver:
    """Accepts `POST /v1/traces` (OTLP/HTTP, protobuf) and keeps every span it decodes."""

    def __init__(self) -> None:
        self.spans: list[Received] = []
        self.posts = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.add(self.path, request)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, path: str, request: ExportTraceServiceRequest) -> None:
        assert path == "/v1/traces"
        with self._lock:
            self.posts += 1
            for resource_spans in request.resource_spans:
                resource = _values(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(
                            Received(
                                span.name,
                                span.kind,
                                span.trace_id.hex(),
                                span.span_id.hex(),
                                span.parent_span_id.hex(),
                                _values(span.attributes),
                                resource,
                            )
                        )

    def trace(self, trace_id: str) -> list[Received]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait_for(self, trace_ids: list[str], spans_each: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while any(len(self.trace(t)) < spans_each for t in trace_ids):
            if time.monotonic() > deadline:
                missing = [t for t in trace_ids if len(self.trace(t)) < spans_each]
                raise AssertionError(f"no complete spans for {len(missing)} traces: {missing[:3]}")
            time.sleep(0.1)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    running = OtlpReceiver()
    running.thread.start()
    yield running
    running.server.shutdown()
    running.server.server_close()


@pytest.fixture
def root(tmp_path: Path, _trained_root: Path) -> Path:
    copy = tmp_path / "registry"
    shutil.copytree(_trained_root, copy)
    return copy


def traceparent(i: int) -> tuple[str, str, str]:
    trace_id, parent = f"{i + 1:032x}", f"{0xABC0 + i:016x}"
    return trace_id, parent, f"00-{trace_id}-{parent}-01"


def server_span(spans: list[Received]) -> Received:
    [found] = [s for s in spans if s.kind == SERVER_KIND]
    return found


def test_spans_reach_an_otlp_receiver_from_every_worker(root: Path, receiver: OtlpReceiver) -> None:
    grpc_port = free_port()
    env = {
        "BERTH_TRACING": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": "berth-e2e",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "NO_PROXY": "127.0.0.1,localhost",
        "BERTH_PREDICTION_LOG": "false",
    }
    args = ("intent", "--workers", "2", "--grpc-port", str(grpc_port))
    with berth_server(root, *args, env=env, timeout=60) as running:
        http_traces = []
        for i in range(16):  # a new connection each: the kernel spreads them over the workers
            trace_id, parent, header = traceparent(i)
            response = httpx.post(
                f"{running.url}/models/intent/predict",
                json={"text": "I want to cancel my subscription"},
                headers={"traceparent": header, "X-Request-ID": f"http-{i}"},
                timeout=10,
            )
            assert response.status_code == 200
            http_traces.append((trace_id, parent, f"http-{i}"))
        grpc_trace, grpc_parent, header = traceparent(100)
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        item = grpcclient.InferInput("text", [1], "BYTES")
        item.set_data_from_numpy(np.array([b"Great service!"], dtype=object))
        result = client.infer(
            "intent", [item], request_id="grpc-1", headers={"traceparent": header}
        )
        assert result.as_numpy("label").tolist() == [b"praise"]
        assert client.is_server_live(headers={"traceparent": traceparent(101)[2]})  # a probe
        client.close()
        # decode, queue, predict, encode under each server span
        receiver.wait_for([t for t, _, _ in http_traces] + [grpc_trace], spans_each=5)

    pids = set()
    for trace_id, parent, request_id in http_traces:
        spans = receiver.trace(trace_id)
        server = server_span(spans)
        assert server.name == "POST /models/{name}/predict"
        assert server.parent_span_id == parent  # the caller's trace goes on
        assert server.attributes["http.route"] == "/models/{name}/predict"
        assert server.attributes["http.response.status_code"] == 200
        assert server.attributes["berth.model"] == "intent"
        assert server.attributes["berth.version"] == "1"
        assert server.attributes["berth.request_id"] == request_id
        assert server.resource["service.name"] == "berth-e2e"
        stages = {s.name: s for s in spans if s is not server}
        assert set(stages) == {"berth.decode", "berth.queue", "berth.predict", "berth.encode"}
        assert {s.parent_span_id for s in stages.values()} == {server.span_id}
        assert stages["berth.predict"].attributes["berth.batch.rows"] == 1
        pids.add(server.resource["process.pid"])
    assert len(pids) == 2  # both workers export (each built its exporter after the fork)
    assert running.process.pid not in pids

    assert receiver.trace(traceparent(101)[0]) == []  # probes are counted, not traced
    spans = receiver.trace(grpc_trace)
    server = server_span(spans)
    assert server.name == "inference.GRPCInferenceService/ModelInfer"
    assert server.parent_span_id == grpc_parent
    assert server.attributes["rpc.system"] == "grpc"
    assert server.attributes["rpc.method"] == "ModelInfer"
    assert server.attributes["rpc.grpc.status_code"] == 0
    assert server.attributes["berth.model"] == "intent"
    assert server.attributes["berth.request_id"] == "grpc-1"
    assert {s.name for s in spans if s is not server} == {
        "berth.decode",
        "berth.queue",
        "berth.predict",
        "berth.encode",
    }


def test_tracing_off_imports_no_opentelemetry(root: Path) -> None:
    grpc_port = free_port()
    env = {"PYTHONPROFILEIMPORTTIME": "1", "BERTH_PREDICTION_LOG": "false"}
    with berth_server(root, "intent", "--grpc-port", str(grpc_port), env=env) as running:
        response = httpx.post(
            f"{running.url}/predict",
            json={"text": "Hi, How are you?"},
            headers={"traceparent": traceparent(1)[2]},
            timeout=10,
        )
        assert response.status_code == 200
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        item = grpcclient.InferInput("text", [1], "BYTES")
        item.set_data_from_numpy(np.array([b"Great service!"], dtype=object))
        assert client.infer("intent", [item]).as_numpy("label").tolist() == [b"praise"]
        client.close()
        log = running.log()
    # the log lists every module the server imported, also those imported while serving
    assert "berth.server.grpc.observe" in log
    assert "berth.server.fastpath" in log
    # FastAPI (0.16x) imports the opentelemetry API itself; without a provider it does nothing
    for absent in (
        "berth.monitoring.tracing",
        "berth.server.tracing",
        "opentelemetry.sdk",
        "opentelemetry.exporter",
    ):
        assert absent not in log, absent
