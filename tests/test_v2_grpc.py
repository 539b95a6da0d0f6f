"""End to end: the real tritonclient (HTTP and gRPC) against a real `berth serve --grpc-port`.

This process must never import berth's generated protobuf modules: they define the same
`inference.*` messages as tritonclient's, and one process cannot hold both in the default pool.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from berth.registry import Registry
from tests.fakes import register_fake
from tests.servers import berth_server, free_port

pytestmark = pytest.mark.e2e

PROTO = Path(__file__).parents[1] / "src/berth/server/proto/inference.proto"
SERVICE = "inference.GRPCInferenceService"
TEXTS = ["I want to cancel my subscription", "Hi, How are you?", "Great service!"]
INTENTS = ["complaint", "greeting", "praise"]


@dataclass
class Servers:
    http: str
    grpc: str
    url: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, _trained_root: Path) -> Iterator[Servers]:
    """The four examples, intent version 2 (a copy of 1, no alias: loads on use), a failing fake."""
    root = tmp_path_factory.mktemp("oip") / "registry"
    shutil.copytree(_trained_root, root)
    registry = Registry(root)
    card = registry.card("intent", 1)
    registry.register("intent", [registry.path("intent", 1) / card.artifact], card)
    register_fake(registry, "failing", behaviour="failing", n_features=3)
    grpc_port = free_port()
    with berth_server(root, "--grpc-port", str(grpc_port)) as running:
        yield Servers(f"127.0.0.1:{running.port}", f"127.0.0.1:{grpc_port}", running.url)


def connect(server: Servers, protocol: str) -> Any:
    if protocol == "http":
        return httpclient.InferenceServerClient(server.http)
    return grpcclient.InferenceServerClient(server.grpc)


@pytest.fixture(params=["http", "grpc"])
def triton(request: pytest.FixtureRequest, server: Servers) -> Iterator[Any]:
    client = connect(server, request.param)
    yield client
    client.close()


def module_of(client: Any) -> Any:
    return httpclient if isinstance(client, httpclient.InferenceServerClient) else grpcclient


def tensor(client: Any, name: str, array: np.ndarray, datatype: str, binary: bool = True) -> Any:
    module = module_of(client)
    item = module.InferInput(name, list(array.shape), datatype)
    if module is httpclient:
        item.set_data_from_numpy(array, binary_data=binary)
    else:
        item.set_data_from_numpy(array)
    return item


def texts(items: list[str]) -> np.ndarray:
    return np.array([t.encode() for t in items], dtype=object)


def status_of(error: InferenceServerException) -> str:
    return str(error.status()).removeprefix("StatusCode.")


def simple_predictions(server: Servers, model: str, rows: list[Any]) -> list[Any]:
    """What the simple JSON API answers for the same rows (the reference for V2 results)."""
    response = httpx.post(
        f"{server.url}/models/{model}/predict/batch", json={"instances": rows}, timeout=10
    )
    assert response.status_code == 200, response.text
    return [p["prediction"] for p in response.json()["predictions"]]


def tabular_rows(server: Servers, n: int) -> np.ndarray:
    info = httpx.get(f"{server.url}/models/tabular").json()
    base = np.array(list(info["input_example"]["features"].values()))
    return np.stack([base * (0.6 + 0.1 * i) for i in range(n)])


# -- health and metadata ----------------------------------------------------------------------


def test_health(triton: Any) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("intent")
    assert triton.is_model_ready("tabular", "1")
    assert triton.is_model_ready("intent", "production")


def test_server_and_model_metadata(triton: Any) -> None:
    if module_of(triton) is httpclient:
        server, model = triton.get_server_metadata(), triton.get_model_metadata("tabular", "1")
    else:
        server = triton.get_server_metadata(as_json=True)
        model = triton.get_model_metadata("tabular", "1", as_json=True)
        for spec in [*model["inputs"], *model["outputs"]]:
            spec["shape"] = [int(d) for d in spec["shape"]]  # int64 travels as JSON strings
    assert server["name"] == "berth"
    assert server["extensions"] == ["binary_tensor_data", "model_repository"]
    assert model == {
        "name": "tabular",
        "versions": ["1"],
        "platform": "sklearn",
        "inputs": [{"name": "features", "datatype": "FP64", "shape": [-1, 30]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]},
        ],
    }


# -- inference --------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("version", ["", "1"])
def test_infer_text(triton: Any, binary: bool, version: str) -> None:
    module = module_of(triton)
    outputs = [
        module.InferRequestedOutput(name, binary_data=binary)
        if module is httpclient
        else module.InferRequestedOutput(name)
        for name in ("label", "probabilities")
    ]
    result = triton.infer(
        "intent",
        [tensor(triton, "text", texts(TEXTS), "BYTES", binary)],
        model_version=version,
        outputs=outputs,
        request_id="rq-7",
    )
    # JSON BYTES outputs come back as str, binary ones as bytes (as from Triton)
    labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label")]
    assert labels == INTENTS
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (3, 4)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    response = result.get_response() if module is httpclient else result.get_response(as_json=True)
    assert response["id"] == "rq-7"
    assert response["model_version"] == "1"


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT64"])
def test_infer_tabular_datatypes(triton: Any, server: Servers, datatype: str) -> None:
    rows = tabular_rows(server, 4)
    if datatype == "INT64":
        rows = np.round(rows)
    array = rows.astype({"FP32": np.float32, "FP64": np.float64, "INT64": np.int64}[datatype])
    result = triton.infer("tabular", [tensor(triton, "features", array, datatype)])
    labels = [label.decode() for label in result.as_numpy("label")]
    assert labels == simple_predictions(server, "tabular", array.astype(np.float64).tolist())
    assert np.allclose(result.as_numpy("probabilities").sum(axis=1), 1.0)


def test_regression_values_match_the_simple_api(triton: Any, server: Servers) -> None:
    rows = np.random.default_rng(1).normal(size=(5, 10)) * 0.05
    result = triton.infer("regression", [tensor(triton, "features", rows, "FP64")])
    values = result.as_numpy("value")
    assert values.dtype == np.float64
    assert values.tolist() == pytest.approx(simple_predictions(server, "regression", rows.tolist()))


def test_gzip_request_through_tritonclient(server: Servers) -> None:
    client = httpclient.InferenceServerClient(server.http)
    result = client.infer(
        "intent",
        [tensor(client, "text", texts(TEXTS), "BYTES")],
        request_compression_algorithm="gzip",
    )
    client.close()
    assert [label.decode() for label in result.as_numpy("label")] == INTENTS


def test_a_version_loads_on_first_use(server: Servers) -> None:
    http, grpc_client = connect(server, "http"), connect(server, "grpc")
    assert not http.is_model_ready("intent", "2")
    assert not grpc_client.is_model_ready("intent", "2")
    result = grpc_client.infer(
        "intent", [tensor(grpc_client, "text", texts(TEXTS[:1]), "BYTES")], model_version="2"
    )
    assert result.get_response().model_version == "2"
    assert http.is_model_ready("intent", "2")
    assert grpc_client.is_model_ready("intent", "2")
    http.close()
    grpc_client.close()


# -- errors ---------------------------------------------------------------------------------------

HTTP_STATUS = {"NOT_FOUND": "404", "INVALID_ARGUMENT": "400", "UNAVAILABLE": "503"}


def expect_error(
    client: Any, code: str, message: str, model: str, inputs: list[Any], **kw: Any
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, inputs, **kw)
    expected = HTTP_STATUS[code] if module_of(client) is httpclient else code
    assert status_of(caught.value) == expected
    assert caught.value.message() == message


def test_unknown_model_and_version(triton: Any) -> None:
    text = [tensor(triton, "text", texts(TEXTS[:1]), "BYTES")]
    expect_error(
        triton,
        "NOT_FOUND",
        "model 'nope' is not served here (served: failing, injection, intent, regression, tabular)",
        "nope",
        text,
    )
    expect_error(
        triton, "NOT_FOUND", "model 'intent' has no version 9", "intent", text, model_version="9"
    )


def test_wrong_shape_and_datatype(triton: Any) -> None:
    rows = np.zeros((2, 29), dtype=np.float32)
    expect_error(
        triton,
        "INVALID_ARGUMENT",
        "input 'features' has shape [2, 29]; model 'tabular' takes [-1, 30] (rows of 30 features)",
        "tabular",
        [tensor(triton, "features", rows, "FP32")],
    )
    expect_error(
        triton,
        "INVALID_ARGUMENT",
        "input 'text' has datatype FP32; model 'intent' takes text as BYTES",
        "intent",
        [tensor(triton, "text", np.zeros(2, dtype=np.float32), "FP32")],
    )
    expect_error(
        triton,
        "INVALID_ARGUMENT",
        "input 'features' has datatype BYTES; this model takes numbers "
        "(UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64)",
        "regression",
        [tensor(triton, "features", np.array([[b"1"] * 10], dtype=object), "BYTES")],
    )


def test_model_not_ready_after_unload(triton: Any) -> None:
    text = [tensor(triton, "text", texts(TEXTS[:1]), "BYTES")]
    triton.unload_model("injection")
    try:
        assert not triton.is_model_ready("injection")
        expect_error(
            triton,
            "UNAVAILABLE",
            "model 'injection' is unloaded; load it again to serve it",
            "injection",
            text,
        )
        index = triton.get_model_repository_index()
        if module_of(triton) is grpcclient:
            index = [
                {"name": m.name, "version": m.version, "state": m.state, "reason": m.reason}
                for m in index.models
            ]
        assert {
            "name": "injection",
            "version": "1",
            "state": "UNAVAILABLE",
            "reason": "unloaded",
        } in index
    finally:
        triton.load_model("injection")
    assert triton.is_model_ready("injection")
    assert triton.infer("injection", text).as_numpy("label").tolist() == [b"benign"]


def test_a_failing_model_is_internal_without_details(triton: Any) -> None:
    with pytest.raises(InferenceServerException) as caught:
        triton.infer(
            "failing", [tensor(triton, "features", np.ones((1, 3)), "FP64")], request_id="f-1"
        )
    assert status_of(caught.value) == ("500" if module_of(triton) is httpclient else "INTERNAL")
    assert caught.value.message() == (
        "model failing@1 failed to predict; the server log has the details (request id f-1)"
    )


def grpc_requests(server: Servers) -> dict[tuple[str, str, str, str], float]:
    """`berth_requests_total` of gRPC calls: (endpoint, model, version, status class) -> count."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return {
        (s.labels["endpoint"], s.labels["model"], s.labels["version"], s.labels["status_class"]): (
            s.value
        )
        for family in text_string_to_metric_families(text)
        if family.name == "berth_requests"
        for s in family.samples
        if s.name == "berth_requests_total" and s.labels["endpoint"].startswith("grpc:")
    }


def test_grpc_calls_are_counted_like_http_requests(server: Servers) -> None:
    before = grpc_requests(server)
    client = grpcclient.InferenceServerClient(server.grpc)
    text = [tensor(client, "text", texts(TEXTS[:1]), "BYTES")]
    for _ in range(3):
        client.infer("intent", text)
    ones = [tensor(client, "features", np.ones((1, 3)), "FP64")]
    for model, inputs in (("nope", text), ("failing", ones)):
        with pytest.raises(InferenceServerException):
            client.infer(model, inputs)
    assert client.is_server_live()
    client.close()
    with grpc.insecure_channel(server.grpc) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError):
            health.Check(health_pb2.HealthCheckRequest(service="nope"))
    after = grpc_requests(server)
    delta = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
    assert delta == {
        ("grpc:ModelInfer", "intent", "1", "2xx"): 3,
        ("grpc:ModelInfer", "", "", "4xx"): 1,  # NOT_FOUND: no model was reached
        ("grpc:ModelInfer", "failing", "1", "5xx"): 1,  # INTERNAL
        ("grpc:ServerLive", "", "", "2xx"): 1,
        ("grpc:Check", "", "", "4xx"): 1,
    }
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    histogram = 'berth_request_duration_seconds_count{endpoint="grpc:ModelInfer",model="intent"'
    assert histogram in metrics


def test_messages_above_4mb_reach_the_server(server: Servers) -> None:
    client = grpcclient.InferenceServerClient(server.grpc)
    rows = np.zeros((20_000, 30))  # 4.8 MB of FP64, past gRPC's default 4 MB limit
    expect_error_code = "RESOURCE_EXHAUSTED"
    with pytest.raises(InferenceServerException) as caught:
        client.infer("tabular", [tensor(client, "features", rows, "FP64")])
    client.close()
    assert status_of(caught.value) == expect_error_code
    assert caught.value.message() == (
        "batch of 20000 rows exceeds the limit of 1000 (BERTH_MAX_BATCH)"
    )


# -- gRPC only ---------------------------------------------------------------------------------


def test_stream_infer_answers_in_order_and_reports_errors(server: Servers) -> None:
    client = grpcclient.InferenceServerClient(server.grpc)
    results: list[tuple[Any, Any]] = []
    client.start_stream(callback=lambda result, error: results.append((result, error)))
    for i, text in enumerate(TEXTS):
        client.async_stream_infer(
            "intent", [tensor(client, "text", texts([text]), "BYTES")], request_id=f"s{i}"
        )
    bad = np.zeros((1, 3), dtype=np.float64)
    client.async_stream_infer("tabular", [tensor(client, "features", bad, "FP64")], request_id="s3")
    client.stop_stream()
    client.close()
    assert len(results) == 4
    for (result, error), intent, i in zip(results[:3], INTENTS, range(3), strict=True):
        assert error is None
        assert result.get_response().id == f"s{i}"
        assert result.as_numpy("label").tolist() == [intent.encode()]
    result, error = results[3]
    assert result is None
    assert "model 'tabular' takes [-1, 30]" in error.message()


def test_typed_contents_are_accepted(server: Servers) -> None:
    """Clients other than tritonclient may send typed contents; answers are raw all the same."""
    with grpc.insecure_channel(server.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="intent", id="typed")
        request.inputs.add(name="text", datatype="BYTES", shape=[2])
        request.inputs[0].contents.bytes_contents.extend([t.encode() for t in TEXTS[:2]])
        response = stub.ModelInfer(request)
        assert response.id == "typed"
        assert [o.name for o in response.outputs] == ["label", "probabilities"]
        assert len(response.raw_output_contents) == 2
        assert not response.outputs[0].HasField("contents")
        probabilities = np.frombuffer(response.raw_output_contents[1], dtype="<f8")
        assert probabilities.shape == (8,)

        mixed = service_pb2.ModelInferRequest(model_name="regression")
        mixed.inputs.add(name="features", datatype="FP64", shape=[1, 10])
        mixed.inputs[0].contents.fp64_contents.extend([0.0] * 10)
        mixed.raw_input_contents.append(np.zeros(10).tobytes())
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(mixed)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == (
            "input 'features' has typed contents, but the request uses raw_input_contents: "
            "use one or the other for all inputs"
        )

        half = service_pb2.ModelInferRequest(model_name="regression")
        half.inputs.add(name="features", datatype="FP16", shape=[1, 10])
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(half)
        assert caught.value.details() == (
            "input 'features': FP16 data must be sent in raw_input_contents"
        )


def test_health_service(server: Servers) -> None:
    with grpc.insecure_channel(server.grpc) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(service="nope"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(server: Servers) -> None:
    """What `grpcurl -plaintext HOST:PORT list` and `describe` show."""
    with grpc.insecure_channel(server.grpc) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert set(database.get_services()) == {
            SERVICE,
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        service = descriptor_pool.DescriptorPool(database).FindServiceByName(SERVICE)
        assert [m.name for m in service.methods] == [
            "ServerLive",
            "ServerReady",
            "ModelReady",
            "ServerMetadata",
            "ModelMetadata",
            "ModelInfer",
            "ModelStreamInfer",
            "RepositoryIndex",
            "RepositoryModelLoad",
            "RepositoryModelUnload",
        ]
        assert service.methods_by_name["ModelInfer"].input_type.full_name == (
            "inference.ModelInferRequest"
        )


def test_proto_is_wire_compatible_with_tritons(tmp_path: Path) -> None:
    """Every message, field and RPC of berth's proto matches tritonclient's by number and type."""
    descriptor_set = tmp_path / "berth.pb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO.parent}",
            f"--descriptor_set_out={descriptor_set}",
            str(PROTO),
        ],
        check=True,
    )
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    ours = descriptor_pool.DescriptorPool()
    for file in files.file:
        ours.Add(file)
    theirs = service_pb2.DESCRIPTOR.pool
    checked = 0

    def compare(message: Any) -> None:
        nonlocal checked
        other = theirs.FindMessageTypeByName(message.full_name)
        for field in message.fields:
            match = other.fields_by_number[field.number]
            assert (match.name, match.type) == (field.name, field.type), message.full_name
            assert match.label == field.label, field.full_name
            checked += 1
        for nested in message.nested_types:
            compare(nested)

    for name in ours.FindFileByName(PROTO.name).message_types_by_name:
        compare(ours.FindMessageTypeByName(f"inference.{name}"))
    service = ours.FindServiceByName(SERVICE)
    triton_service = theirs.FindServiceByName(SERVICE)
    for method in service.methods:
        other = triton_service.methods_by_name[method.name]
        assert other.input_type.full_name == method.input_type.full_name
        assert other.output_type.full_name == method.output_type.full_name
        assert (other.client_streaming, other.server_streaming) == (
            method.client_streaming,
            method.server_streaming,
        )
    assert checked > 60


# -- V1 ----------------------------------------------------------------------------------------


def test_kserve_v1_call(server: Servers) -> None:
    """A KServe V1 client's call, as its SDK and TF-Serving-style clients make it."""
    ready = httpx.get(f"{server.url}/v1/models/intent", timeout=10)
    assert ready.json() == {"name": "intent", "ready": True}
    response = httpx.post(
        f"{server.url}/v1/models/intent:predict", json={"instances": TEXTS}, timeout=10
    )
    assert response.status_code == 200
    assert response.json() == {"predictions": INTENTS}


# -- berth serve --grpc-port ---------------------------------------------------------------------


def run_berth(*args: str, block_grpc: bool = False) -> subprocess.CompletedProcess[str]:
    code = "import sys\n"
    if block_grpc:
        code += "sys.modules['grpc'] = None  # as if the grpc extra were not installed\n"
    code += f"sys.argv = ['berth', *{list(args)!r}]\nfrom berth.cli.main import main\nmain()\n"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_grpc_without_the_extra_is_a_clear_error(examples_registry: Registry) -> None:
    root = str(examples_registry.root)
    done = run_berth("--registry", root, "serve", "intent", "--grpc-port", "1", block_grpc=True)
    assert done.returncode == 1
    assert "error: gRPC serving needs grpc: pip install 'berth[grpc]'" in done.stderr


def test_a_busy_grpc_port_is_a_clear_error(examples_registry: Registry) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        done = run_berth(
            "--registry", str(examples_registry.root), "serve", "intent", "--grpc-port", str(port)
        )
    assert done.returncode == 1
    assert f"error: cannot serve gRPC on 127.0.0.1:{port}: Address already in use" in done.stderr
