"""The V2 REST routes in-process: JSON and binary tensors, compression, errors, the repository."""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from berth.registry import Registry
from tests.conftest import ClientFactory
from tests.fakes import register_fake

TEXTS = ["I want to cancel my subscription", "Hi, How are you?"]


@pytest.fixture
def client(examples_registry: Registry, make_client: ClientFactory) -> Iterator[TestClient]:
    register_fake(examples_registry, "failing", behaviour="failing", n_features=3)
    with make_client(examples_registry) as client:
        yield client


def text_input(texts: list[str]) -> dict[str, Any]:
    return {"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}


def features(rows: np.ndarray, datatype: str = "FP64") -> dict[str, Any]:
    return {
        "name": "features",
        "datatype": datatype,
        "shape": list(rows.shape),
        "data": rows.tolist(),
    }


def tabular_rows(client: TestClient, n: int) -> np.ndarray:
    """The tabular model's own input example, repeated with small changes."""
    example = client.get("/models/tabular").json()["input_example"]["features"]
    base = np.array(list(example.values()), dtype=np.float64)
    return np.stack([base * (1 + 0.05 * i) for i in range(n)])


def bytes_blob(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def split_binary(response: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The JSON header and each binary output's bytes of a binary-extension response."""
    length = int(response.headers["inference-header-content-length"])
    header = orjson.loads(response.content[:length])
    blobs, offset = {}, length
    for output in header["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is not None:
            blobs[output["name"]] = response.content[offset : offset + size]
            offset += size
    assert offset == len(response.content)
    return header, blobs


# -- health and metadata ----------------------------------------------------------------------


def test_health_and_server_metadata(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2").json()
    assert meta["name"] == "berth"
    assert meta["extensions"] == ["binary_tensor_data", "model_repository"]
    assert client.get("/v2/models").json() == {
        "models": ["failing", "injection", "intent", "regression", "tabular"]
    }


def test_model_metadata_from_the_signature(client: TestClient) -> None:
    intent = client.get("/v2/models/intent").json()
    assert intent == {
        "name": "intent",
        "versions": ["1"],
        "platform": "sklearn",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, 4]},
        ],
    }
    tabular = client.get("/v2/models/tabular/versions/1").json()
    assert tabular["inputs"] == [{"name": "features", "datatype": "FP64", "shape": [-1, 30]}]
    regression = client.get("/v2/models/regression/versions/production").json()
    assert regression["outputs"] == [{"name": "value", "datatype": "FP64", "shape": [-1]}]


def test_unknown_model_and_version_are_404_with_the_v2_body(client: TestClient) -> None:
    response = client.get("/v2/models/nope")
    assert response.status_code == 404
    assert response.json() == {
        "error": "model 'nope' is not served here "
        "(served: failing, injection, intent, regression, tabular)"
    }
    response = client.get("/v2/models/intent/versions/7/ready")
    assert response.status_code == 404
    assert response.json() == {"error": "model 'intent' has no version 7"}
    response = client.post("/v2/models/nope/infer", json={"inputs": [text_input(TEXTS)]})
    assert response.status_code == 404
    assert set(response.json()) == {"error"}


# -- inference with JSON data -----------------------------------------------------------------


def test_infer_text_json(client: TestClient) -> None:
    response = client.post(
        "/v2/models/intent/infer", json={"id": "req-1", "inputs": [text_input(TEXTS)]}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "intent"
    assert body["model_version"] == "1"
    assert body["id"] == "req-1"
    label, probabilities = body["outputs"]
    assert label == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [2],
        "data": ["complaint", "greeting"],
    }
    assert probabilities["shape"] == [2, 4]
    rows = np.array(probabilities["data"]).reshape(2, 4)
    assert np.allclose(rows.sum(axis=1), 1.0)


def test_id_defaults_to_the_request_id(client: TestClient) -> None:
    response = client.post(
        "/v2/models/intent/infer",
        json={"inputs": [text_input(TEXTS[:1])]},
        headers={"X-Request-ID": "trace-42"},
    )
    assert response.json()["id"] == "trace-42"


def test_tabular_nested_and_flat_data_agree_with_the_simple_api(client: TestClient) -> None:
    rows = tabular_rows(client, 3)
    nested = client.post("/v2/models/tabular/infer", json={"inputs": [features(rows)]}).json()
    flat_input = {**features(rows, "FP32"), "data": rows.astype(np.float32).ravel().tolist()}
    flat = client.post("/v2/models/tabular/infer", json={"inputs": [flat_input]}).json()
    simple = client.post(
        "/models/tabular/predict/batch",
        json={"instances": [{"features": r} for r in rows.tolist()]},
    ).json()
    labels = [p["prediction"] for p in simple["predictions"]]
    assert nested["outputs"][0]["data"] == labels
    assert flat["outputs"][0]["data"] == labels
    classes = client.get("/models/tabular").json()["classes"]
    expected = [p["probabilities"][c] for p in simple["predictions"] for c in classes]
    assert nested["outputs"][1]["data"] == pytest.approx(expected)


def test_integer_features(client: TestClient) -> None:
    rows = np.array([[1, 2, 0, -1, 3, 1, 0, 2, 1, 1]], dtype=np.int64)
    response = client.post(
        "/v2/models/regression/infer", json={"inputs": [features(rows, "INT64")]}
    )
    assert response.status_code == 200, response.text
    simple = client.post("/models/regression/predict", json={"features": rows[0].tolist()})
    assert response.json()["outputs"][0]["data"] == [simple.json()["prediction"]]


def test_one_tensor_per_named_feature(client: TestClient) -> None:
    rows = tabular_rows(client, 2)
    names = client.get("/models/tabular").json()["signature"]["feature_names"]
    inputs = [
        {"name": name, "datatype": "FP64", "shape": [2, 1], "data": rows[:, j].tolist()}
        for j, name in enumerate(names)
    ]
    by_name = client.post("/v2/models/tabular/infer", json={"inputs": inputs[::-1]}).json()
    matrix = client.post("/v2/models/tabular/infer", json={"inputs": [features(rows)]}).json()
    assert by_name["outputs"] == matrix["outputs"]
    response = client.post("/v2/models/tabular/infer", json={"inputs": inputs[:-1]})
    assert response.status_code == 400
    assert response.json()["error"] == f"missing inputs for features: {names[-1]!r}"


def test_requested_outputs_are_honoured(client: TestClient) -> None:
    body = {"inputs": [text_input(TEXTS)], "outputs": [{"name": "probabilities"}]}
    outputs = client.post("/v2/models/intent/infer", json=body).json()["outputs"]
    assert [o["name"] for o in outputs] == ["probabilities"]
    body["outputs"] = [{"name": "logits"}]
    response = client.post("/v2/models/intent/infer", json=body)
    assert response.status_code == 400
    assert response.json() == {
        "error": "unknown output 'logits'; model 'intent' has label, probabilities"
    }


def test_no_content_type_needed(client: TestClient) -> None:
    content = orjson.dumps({"inputs": [text_input(TEXTS[:1])]})
    response = client.post("/v2/models/intent/infer", content=content, headers={})
    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == ["complaint"]


# -- the binary tensor data extension --------------------------------------------------------


def test_binary_input_and_outputs(client: TestClient) -> None:
    rows = tabular_rows(client, 2)
    raw = rows.astype("<f4").tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "datatype": "FP32",
                    "shape": [2, 30],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    response = client.post(
        "/v2/models/tabular/infer",
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    head, blobs = split_binary(response)
    assert [o["name"] for o in head["outputs"]] == ["label", "probabilities"]
    probabilities = np.frombuffer(blobs["probabilities"], dtype="<f8").reshape(2, 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    labels = blobs["label"]
    (first,) = struct.unpack_from("<I", labels)
    assert labels[4 : 4 + first] in (b"malignant", b"benign")


def test_per_output_binary_overrides_the_request_default(client: TestClient) -> None:
    texts = [t.encode() for t in TEXTS]
    blob = bytes_blob(texts)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": len(blob)},
                }
            ],
            "outputs": [
                {"name": "label", "parameters": {"binary_data": False}},
                {"name": "probabilities", "parameters": {"binary_data": True}},
            ],
        }
    )
    response = client.post(
        "/v2/models/intent/infer",
        content=header + blob,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    head, blobs = split_binary(response)
    assert head["outputs"][0]["data"] == ["complaint", "greeting"]
    assert head["outputs"][1]["parameters"] == {"binary_data_size": 2 * 4 * 8}
    assert np.frombuffer(blobs["probabilities"], "<f8").shape == (8,)


def test_raw_only_request(client: TestClient) -> None:
    rows = np.random.default_rng(0).normal(size=(3, 10)) * 0.05
    response = client.post(
        "/v2/models/regression/infer",
        content=rows.astype("<f8").tobytes(),
        headers={"Inference-Header-Content-Length": "0"},
    )
    assert response.status_code == 200, response.text
    head, blobs = split_binary(response)
    assert head["outputs"][0]["shape"] == [3]
    simple = client.post(
        "/models/regression/predict/batch", json={"instances": rows.tolist()}
    ).json()
    values = np.frombuffer(blobs["value"], "<f8")
    assert values.tolist() == pytest.approx([p["prediction"] for p in simple["predictions"]])


@pytest.mark.parametrize(
    ("size", "extra", "error"),
    [
        (100, b"", "input 'text': binary_data_size 100 runs past the end of the body"),
        (None, b"xx", "the body has 2 bytes beyond the inputs' binary_data_size"),
    ],
)
def test_binary_sizes_must_match_the_body(
    client: TestClient, size: int | None, extra: bytes, error: str
) -> None:
    blob = bytes_blob([b"hello"])
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": size or len(blob)},
                }
            ]
        }
    )
    response = client.post(
        "/v2/models/intent/infer",
        content=header + blob + extra,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400
    assert response.json() == {"error": error}


def test_nan_in_binary_data_is_refused(client: TestClient) -> None:
    raw = np.array([[np.nan] + [0.0] * 9]).astype("<f8").tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "datatype": "FP64",
                    "shape": [1, 10],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    )
    response = client.post(
        "/v2/models/regression/infer",
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400
    assert "must be a finite number, got nan" in response.json()["error"]


# -- compression --------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_requests(client: TestClient, encoding: str) -> None:
    body = orjson.dumps({"inputs": [text_input(TEXTS)]})
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    response = client.post(
        "/v2/models/intent/infer", content=packed, headers={"Content-Encoding": encoding}
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == ["complaint", "greeting"]


def test_compression_errors(client: TestClient) -> None:
    response = client.post(
        "/v2/models/intent/infer", content=b"not gzip", headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("the gzip body cannot be decompressed")
    bomb = gzip.compress(b" " * (11 * 1024 * 1024))
    response = client.post(
        "/v2/models/intent/infer", content=bomb, headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 413
    assert response.json() == {
        "error": f"the decompressed body exceeds {10 * 1024 * 1024} bytes (BERTH_MAX_BODY_BYTES)"
    }


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "tensor", "error"),
    [
        (
            "regression",
            {"name": "features", "datatype": "FP64", "shape": [1, 9], "data": [0.0] * 9},
            "input 'features' has shape [1, 9]; model 'regression' takes [-1, 10] "
            "(rows of 10 features)",
        ),
        (
            "regression",
            {"name": "features", "datatype": "BYTES", "shape": [1, 10], "data": ["a"] * 10},
            "input 'features' has datatype BYTES; this model takes numbers "
            "(UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64)",
        ),
        (
            "intent",
            {"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]},
            "input 'text' has datatype FP32; model 'intent' takes text as BYTES",
        ),
        (
            "intent",
            {"name": "text", "datatype": "BYTES", "shape": [3], "data": ["a", "b"]},
            "tensor 'text': shape [3] holds 3 elements, the data has 2",
        ),
        (
            "intent",
            {"name": "text", "datatype": "BYTES", "shape": [1], "data": [7]},
            "tensor 'text': element 0 is 7, not a BYTES value",
        ),
        (
            "regression",
            {"name": "features", "datatype": "INT64", "shape": [1, 10], "data": [1.5] * 10},
            "tensor 'features': element 0 is 1.5, not a INT64 value",
        ),
        (
            "regression",
            {"name": "features", "datatype": "BF16", "shape": [1, 10], "data": [1.5] * 10},
            "tensor 'features': unsupported datatype 'BF16' (supported: BOOL, UINT8, UINT16, "
            "UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES)",
        ),
        (
            "intent",
            {"name": "text", "datatype": "BYTES", "shape": [1], "data": [" "]},
            "instances[0]: text must not be empty",
        ),
    ],
)
def test_invalid_inputs_are_400(
    client: TestClient, model: str, tensor: dict[str, Any], error: str
) -> None:
    response = client.post(f"/v2/models/{model}/infer", json={"inputs": [tensor]})
    assert response.status_code == 400
    assert response.json() == {"error": error}


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"{", "request body is not valid JSON"),
        (b"[]", "the inference request must be a JSON object"),
        (b'{"inputs": []}', 'the inference request needs a non-empty "inputs" list'),
        (b'{"inputs": [{"name": "text"}]}', "inputs[0] ('text') needs a \"datatype\" string"),
    ],
)
def test_malformed_requests_are_400(client: TestClient, content: bytes, error: str) -> None:
    response = client.post("/v2/models/intent/infer", content=content)
    assert response.status_code == 400
    assert response.json()["error"].startswith(error)


def test_model_failure_is_500_without_internals(client: TestClient) -> None:
    response = client.post("/v2/models/failing/infer", json={"inputs": [features(np.ones((1, 3)))]})
    assert response.status_code == 500
    assert response.json() == {
        "error": "model failing@1 failed to predict; the server log has the details "
        f"(request id {response.headers['x-request-id']})"
    }


# -- the model-repository extension -----------------------------------------------------------


def test_unload_makes_the_model_not_ready_until_loaded(client: TestClient) -> None:
    body = {"inputs": [text_input(TEXTS)]}
    assert client.post("/v2/repository/models/intent/unload").status_code == 200
    assert client.get("/v2/models/intent/ready").status_code == 503
    response = client.post("/v2/models/intent/infer", json=body)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"error": "model 'intent' is unloaded; load it again to serve it"}
    index = {m["name"]: m for m in client.post("/v2/repository/index").json()}
    assert index["intent"] == {
        "name": "intent",
        "version": "1",
        "state": "UNAVAILABLE",
        "reason": "unloaded",
    }
    assert index["tabular"]["state"] == "READY"
    ready = client.post("/v2/repository/index", json={"ready": True}).json()
    assert "intent" not in {m["name"] for m in ready}
    assert client.post("/v2/repository/models/intent/load").status_code == 200
    assert client.get("/v2/models/intent/ready").status_code == 200
    assert client.post("/v2/models/intent/infer", json=body).status_code == 200


def test_load_refuses_config_overrides(client: TestClient) -> None:
    response = client.post(
        "/v2/repository/models/intent/load", json={"parameters": {"config": "{}"}}
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("load parameter 'config' is not supported")


def test_model_control_can_be_turned_off(
    examples_registry: Registry, make_client: ClientFactory
) -> None:
    with make_client(examples_registry, model_control=False) as client:
        assert client.post("/v2/repository/models/intent/unload").status_code == 404
        assert client.get("/v2").json()["extensions"] == ["binary_tensor_data"]


def test_openapi_examples_are_valid_requests(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v2/models/{name}/infer"]["post"]
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    assert set(examples) == {"failing", "injection", "intent", "regression", "tabular"}
    for name, example in examples.items():
        response = client.post(f"/v2/models/{name}/infer", json=example["value"])
        assert response.status_code == (500 if name == "failing" else 200), response.text


def test_v2_requests_follow_the_traffic_route(
    examples_registry: Registry, make_client: ClientFactory
) -> None:
    card = examples_registry.card("regression", 1)
    artifact = examples_registry.path("regression", 1) / card.artifact
    examples_registry.register("regression", [artifact], card)
    examples_registry.set_route("regression", {"weights": {"1": 50, "2": 50}})
    body = {"inputs": [features(np.zeros((1, 10)))]}
    with make_client(examples_registry) as client:

        def version_for(key: str) -> str:
            response = client.post(
                "/v2/models/regression/infer", json=body, headers={"X-Berth-Key": key}
            )
            assert response.status_code == 200, response.text
            return str(response.json()["model_version"])

        assert {version_for(f"user-{i}") for i in range(40)} == {"1", "2"}
        assert len({version_for("user-7") for _ in range(5)}) == 1
        pinned = client.post("/v2/models/regression/versions/2/infer", json=body).json()
        assert pinned["model_version"] == "2"
