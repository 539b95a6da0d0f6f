"""API keys, rate limits, TLS and their metrics over gRPC, against real `berth serve --grpc-port`.

Like test_v2_grpc.py, this process must never import berth's generated protobuf modules: the
calls go through tritonclient's copy of the same service.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from berth.registry import Registry
from berth.security.keys import KeyStore, default_keys_path
from tests.fakes import install_fake_runtime, register_fake
from tests.servers import berth_server, free_port
from tests.test_metrics import value
from tests.test_tls import _self_signed

pytestmark = pytest.mark.e2e

REDIS_URL = os.environ.get("BERTH_TEST_REDIS_URL")


@dataclass
class Server:
    grpc: str
    url: str


@dataclass
class Keys:
    admin: str
    predict: str
    alpha_only: str
    revoked: str


def _registry(root: Path) -> Registry:
    install_fake_runtime()
    registry = Registry(root)
    register_fake(registry, "alpha")
    register_fake(registry, "beta")
    return registry


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Keys]]:
    """alpha and beta served with keys in place: admin, predict, predict on alpha, revoked."""
    root = tmp_path_factory.mktemp("grpc-keys") / "registry"
    _registry(root)
    store = KeyStore(default_keys_path(root))
    revoked, revoked_token = store.create("old", "predict")
    store.revoke(revoked.id)
    keys = Keys(
        admin=store.create("ops", "admin")[1],
        predict=store.create("any", "predict")[1],
        alpha_only=store.create("web", "predict", model="alpha")[1],
        revoked=revoked_token,
    )
    port = free_port()
    with berth_server(root, "--grpc-port", str(port)) as running:
        yield Server(f"127.0.0.1:{port}", running.url), keys


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def infer_request(model: str, row: Sequence[float] = (1.0, 2.0, 3.0)) -> Any:
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="features", datatype="FP64", shape=[1, len(row)])
    tensor.contents.fp64_contents.extend(row)
    return request


def value_of(response: Any) -> float:
    assert response.outputs[0].name == "value"
    return float(np.frombuffer(response.raw_output_contents[0], dtype=np.float64)[0])


def refused(call: Any, request: Any, metadata: Sequence[tuple[str, str]] = ()) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, metadata=metadata)
    error: grpc.RpcError = caught.value
    return error


@pytest.fixture
def stub(keyed: tuple[Server, Keys]) -> Iterator[Any]:
    with grpc.insecure_channel(keyed[0].grpc) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of `GET /metrics`, e.g. metric(url, "berth_rate_limited_total", scope="key")."""
    return value(httpx.get(f"{url}/metrics").text, name, **labels)


# -- API keys -----------------------------------------------------------------------------------


def test_no_unknown_or_revoked_key_is_unauthenticated(
    stub: Any, keyed: tuple[Server, Keys]
) -> None:
    keys = keyed[1]
    missing = refused(stub.ModelInfer, infer_request("alpha"))
    assert missing.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "send `Authorization: Bearer <key>` or `X-API-Key: <key>`" in missing.details()
    for token in ("berth_000000000000_guess", "not-even-a-key", keys.revoked):
        error = refused(
            stub.ModelMetadata, service_pb2.ModelMetadataRequest(name="alpha"), bearer(token)
        )
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error.details() == "invalid or revoked API key"
    # ServerMetadata needs a predict key, as GET /v2 does
    error = refused(stub.ServerMetadata, service_pb2.ServerMetadataRequest())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


def test_liveness_readiness_health_and_reflection_stay_open(keyed: tuple[Server, Keys]) -> None:
    client = grpcclient.InferenceServerClient(keyed[0].grpc)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
    finally:
        client.close()
    with grpc.insecure_channel(keyed[0].grpc) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(service=""))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("form", ["bearer", "x-api-key"])
def test_a_predict_key_infers_on_every_model(
    stub: Any, keyed: tuple[Server, Keys], form: str
) -> None:
    token = keyed[1].predict
    metadata = bearer(token) if form == "bearer" else [("x-api-key", token)]
    assert value_of(stub.ModelInfer(infer_request("alpha"), metadata=metadata)) == 6.0
    assert value_of(stub.ModelInfer(infer_request("beta", (2, 2, 2)), metadata=metadata)) == 6.0
    ready = stub.ModelReady(service_pb2.ModelReadyRequest(name="beta"), metadata=metadata)
    assert ready.ready


def test_tritonclient_sends_the_key_as_a_header(keyed: tuple[Server, Keys]) -> None:
    client = grpcclient.InferenceServerClient(keyed[0].grpc)
    try:
        tensor = grpcclient.InferInput("features", [1, 3], "FP64")
        tensor.set_data_from_numpy(np.array([[1.0, 1.0, 1.5]]))
        result = client.infer("alpha", [tensor], headers={"x-api-key": keyed[1].alpha_only})
        assert result.as_numpy("value").tolist() == [3.5]
        metadata = client.get_server_metadata(
            headers={"authorization": f"Bearer {keyed[1].predict}"}
        )
        assert metadata.name == "berth"
    finally:
        client.close()


def test_a_key_for_one_model_is_denied_the_others(stub: Any, keyed: tuple[Server, Keys]) -> None:
    metadata = bearer(keyed[1].alpha_only)
    assert value_of(stub.ModelInfer(infer_request("alpha"), metadata=metadata)) == 6.0
    assert (
        stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="alpha"), metadata=metadata).name
        == "alpha"
    )
    for call, request in (
        (stub.ModelInfer, infer_request("beta")),
        (stub.ModelMetadata, service_pb2.ModelMetadataRequest(name="beta")),
        (stub.ModelReady, service_pb2.ModelReadyRequest(name="beta")),
    ):
        error = refused(call, request, metadata)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error.details().endswith(
            "(predict on model 'alpha') does not allow predict on model 'beta'"
        )


def test_repository_rpcs_need_an_admin_key(stub: Any, keyed: tuple[Server, Keys]) -> None:
    index = service_pb2.RepositoryIndexRequest()
    for token in (keyed[1].predict, keyed[1].alpha_only):
        error = refused(stub.RepositoryIndex, index, bearer(token))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error.details().endswith("does not allow admin")
    unload = service_pb2.RepositoryModelUnloadRequest(model_name="beta")
    assert refused(stub.RepositoryModelUnload, unload, bearer(keyed[1].predict)).code() == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    models = stub.RepositoryIndex(index, metadata=bearer(keyed[1].admin)).models
    assert sorted(m.name for m in models) == ["alpha", "beta"]


def test_stream_infer_checks_every_message(stub: Any, keyed: tuple[Server, Keys]) -> None:
    metadata = bearer(keyed[1].alpha_only)
    replies = stub.ModelStreamInfer(
        iter([infer_request("alpha"), infer_request("beta")]), metadata=metadata
    )
    first = next(replies)
    assert first.error_message == ""
    assert value_of(first.infer_response) == 6.0
    with pytest.raises(grpc.RpcError) as caught:
        next(replies)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    anonymous = stub.ModelStreamInfer(iter([infer_request("alpha")]))
    with pytest.raises(grpc.RpcError) as caught:
        next(anonymous)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_refusals_are_counted_in_the_metrics(stub: Any, keyed: tuple[Server, Keys]) -> None:
    url = keyed[0].url
    labels = {"protocol": "grpc"}
    before = {
        reason: metric(url, "berth_access_denied_total", reason=reason, **labels)
        for reason in ("unauthorized", "forbidden")
    }
    for _ in range(3):
        refused(stub.ModelInfer, infer_request("alpha"))
    for _ in range(2):
        refused(stub.ModelInfer, infer_request("beta"), bearer(keyed[1].alpha_only))
    after = {
        reason: metric(url, "berth_access_denied_total", reason=reason, **labels)
        for reason in before
    }
    assert after["unauthorized"] - before["unauthorized"] == 3
    assert after["forbidden"] - before["forbidden"] == 2


def test_peer_addresses_decide_loopback() -> None:
    """The servers here bind loopback only, so remote peers are checked on the parsing alone
    (in a child process: this one must not import berth's protobuf modules)."""
    code = (
        "from berth.server.grpc.guard import peer_address\n"
        "from berth.security.access import is_loopback\n"
        "for peer in ('ipv4:127.0.0.1:5000', 'ipv6:%5B::1%5D:5000', 'ipv6:[::1]:5000',"
        " 'ipv6:[::ffff:127.0.0.1]:5', 'ipv4:10.1.2.3:443', 'ipv6:[2001:db8::1]:80',"
        " 'ipv6:[::ffff:10.0.0.1]:5', 'unix:/tmp/berth.sock'):\n"
        "    print(peer_address(peer), is_loopback(peer_address(peer)))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert output == [
        "127.0.0.1 True",
        "::1 True",
        "::1 True",
        "::ffff:127.0.0.1 True",
        "10.1.2.3 False",
        "2001:db8::1 False",
        "::ffff:10.0.0.1 False",
        " False",
    ]


# -- rate limits --------------------------------------------------------------------------------


def _limited_server(root: Path, storage: str) -> tuple[Any, str, int]:
    _registry(root)
    _, token = KeyStore(default_keys_path(root)).create("client", "predict")
    env = {
        "BERTH_RATE_LIMIT_KEY_RATE": "0.01",
        "BERTH_RATE_LIMIT_KEY_BURST": "2",
        "BERTH_RATE_LIMIT_ADDRESS_RATE": "0.01" if storage == "memory" else "0",
        "BERTH_RATE_LIMIT_ADDRESS_BURST": "1",
        "BERTH_RATE_LIMIT_STORAGE": storage,
    }
    port = free_port()
    return berth_server(root, "--grpc-port", str(port), env=env), token, port


def test_rate_limits_answer_resource_exhausted_with_a_retry_hint(tmp_path: Path) -> None:
    server, token, port = _limited_server(tmp_path / "registry", "memory")
    with server as running, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(2):
            assert value_of(stub.ModelInfer(infer_request("alpha"), metadata=bearer(token))) == 6.0
        error = refused(stub.ModelInfer, infer_request("alpha"), bearer(token))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.details() == "rate limit of 2 requests exceeded: retry in 100 s"
        trailers = dict(error.trailing_metadata())
        assert int(trailers["retry-after"]) == 100  # one token takes 100 s at 0.01/s
        assert trailers["ratelimit-remaining"] == "0"
        # one bucket per key, whichever protocol spends it
        http = httpx.post(
            f"{running.url}/models/alpha/predict",
            json={"features": [1, 2, 3]},
            headers={"x-api-key": token},
        )
        assert http.status_code == 429
        # without a valid key the caller's address pays (burst 1), before its key is judged
        first = refused(stub.ModelInfer, infer_request("alpha"))
        assert first.code() == grpc.StatusCode.UNAUTHENTICATED
        second = refused(stub.ModelInfer, infer_request("alpha"))
        assert second.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # liveness and readiness are never limited
        for _ in range(5):
            assert stub.ServerLive(service_pb2.ServerLiveRequest()).live
        url = running.url
        assert metric(url, "berth_rate_limited_total", protocol="grpc", scope="key") == 1
        assert metric(url, "berth_rate_limited_total", protocol="grpc", scope="address") == 1
        assert metric(url, "berth_rate_limited_total", protocol="http", scope="key") == 1
        assert metric(url, "berth_access_denied_total", protocol="grpc", reason="unauthorized") == 1
        assert '"message":"rate limit exceeded"' in running.log()


@pytest.mark.skipif(not REDIS_URL, reason="set BERTH_TEST_REDIS_URL to run")
def test_rate_limits_over_grpc_share_redis_with_http(tmp_path: Path) -> None:
    assert REDIS_URL
    server, token, port = _limited_server(tmp_path / "registry", REDIS_URL)
    with server as running, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert value_of(stub.ModelInfer(infer_request("alpha"), metadata=bearer(token))) == 6.0
        http = httpx.post(
            f"{running.url}/models/alpha/predict",
            json={"features": [1, 2, 3]},
            headers={"x-api-key": token},
        )
        assert http.status_code == 200
        error = refused(stub.ModelInfer, infer_request("alpha"), bearer(token))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert int(dict(error.trailing_metadata())["retry-after"]) >= 90


# -- TLS ----------------------------------------------------------------------------------------


def test_tls_on_the_grpc_port_with_the_http_certificate(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    _registry(root)
    cert, key = _self_signed(tmp_path)
    port = free_port()
    args = ("--grpc-port", str(port), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    with berth_server(root, *args, ca=cert):
        client = grpcclient.InferenceServerClient(
            f"127.0.0.1:{port}", ssl=True, root_certificates=str(cert)
        )
        try:
            tensor = grpcclient.InferInput("features", [1, 3], "FP64")
            tensor.set_data_from_numpy(np.array([[1.0, 2.0, 4.0]]))
            assert client.infer("alpha", [tensor]).as_numpy("value").tolist() == [7.0]
            # no key exists: repository RPCs answer on loopback, as admin routes do over HTTP
            assert {
                m["name"] for m in client.get_model_repository_index(as_json=True)["models"]
            } == {
                "alpha",
                "beta",
            }
        finally:
            client.close()
        credentials = grpc.ssl_channel_credentials(cert.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:  # no plaintext on that port
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        other = tmp_path / "other"
        other.mkdir()
        stranger, _ = _self_signed(other)  # a certificate the client does not trust
        credentials = grpc.ssl_channel_credentials(stranger.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


# -- shutdown -----------------------------------------------------------------------------------


def test_sigterm_turns_grpc_health_not_serving_while_calls_still_answer(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    _registry(root)
    port = free_port()
    args = ("--grpc-port", str(port), "--shutdown-grace", "5")
    with (
        berth_server(root, *args) as running,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        check = health_pb2.HealthCheckRequest(service="")
        assert health.Check(check).status == health_pb2.HealthCheckResponse.SERVING
        running.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while health.Check(check).status == health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "health still SERVING after SIGTERM"
            time.sleep(0.05)
        assert health.Check(check).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert not stub.ServerReady(service_pb2.ServerReadyRequest()).ready
        assert value_of(stub.ModelInfer(infer_request("alpha"))) == 6.0  # still in the grace period
        assert running.process.wait(timeout=30) in (0, -signal.SIGTERM)
