"""ONNX graphs: register, serve and predict; and `berth models convert --to onnx`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from berth.registry import Registry
from berth.settings import Settings
from tests.conftest import ClientFactory
from tests.formats import berth, flat, predict_rest, register_ok

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
skl2onnx = pytest.importorskip("skl2onnx")


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    from sklearn.datasets import load_iris

    data = load_iris()
    return data.data, np.asarray(data.target_names)[data.target]


def test_skl2onnx_classifier_with_zipmap(
    tmp_path: Path, registry: Registry, make_client: ClientFactory, iris
) -> None:  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    x, y = iris
    model = LogisticRegression(max_iter=500).fit(x, y)
    path = tmp_path / "iris.onnx"  # skl2onnx's default ZipMap output: a list of {class: p}
    path.write_bytes(skl2onnx.to_onnx(model, x[:1].astype(np.float32)).SerializeToString())
    register_ok(registry, str(path), "--name", "iris", "--feature-names", "sl,sw,pl,pw")

    rows = x[[0, 60, 120]]
    predictions, info = predict_rest(make_client, registry, "iris", rows.tolist())
    assert [p["prediction"] for p in predictions] == model.predict(rows).tolist()
    expected = model.predict_proba(rows)
    for got, want in zip(predictions, expected, strict=True):
        assert list(got["probabilities"]) == ["setosa", "versicolor", "virginica"]
        assert np.allclose(list(got["probabilities"].values()), want, atol=1e-5)
    assert info["framework"] == "onnx"
    assert info["task"] == "classification"
    assert info["classes"] == ["setosa", "versicolor", "virginica"]
    assert info["signature"] == {
        "kind": "tabular",
        "n_features": 4,
        "feature_names": ["sl", "sw", "pl", "pw"],
    }
    assert "onnxruntime" in info["libraries"]


def test_named_inputs_graph_is_one_feature_per_input(
    tmp_path: Path, registry: Registry, make_client: ClientFactory
) -> None:
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 1]) for n in "ab"]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["a", "two"], ["a2"]),
            helper.make_node("Add", ["a2", "b"], ["y"]),
        ],
        "weighted_sum",
        inputs,
        [output],
        [two],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    path = tmp_path / "sum.onnx"
    path.write_bytes(model.SerializeToString())
    register_ok(registry, str(path), "--name", "sum")
    predictions, info = predict_rest(
        make_client, registry, "sum", [{"a": 1.0, "b": 2.0}, {"b": 0.5, "a": -3.0}]
    )
    assert [p["prediction"] for p in predictions] == [4.0, -5.5]
    assert info["task"] == "regression"
    assert info["signature"]["feature_names"] == ["a", "b"]


def test_text_graph(tmp_path: Path, registry: Registry, make_client: ClientFactory) -> None:
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.naive_bayes import MultinomialNB
    from sklearn.pipeline import make_pipeline

    texts = ["good great fine", "great good", "bad awful", "awful terrible bad", "fine good"]
    labels = ["pos", "pos", "neg", "neg", "pos"]
    pipeline = make_pipeline(CountVectorizer(), MultinomialNB()).fit(texts, labels)
    graph = skl2onnx.to_onnx(
        pipeline,
        initial_types=[("text", StringTensorType([None, 1]))],
        options={
            id(pipeline.steps[0][1]): {"locale": "C"},
            id(pipeline.steps[1][1]): {"zipmap": False},
        },
    )
    path = tmp_path / "sentiment.onnx"
    path.write_bytes(graph.SerializeToString())
    register_ok(registry, str(path), "--name", "sentiment")
    queries = ["good and great", "terrible, awful!"]
    predictions, info = predict_rest(make_client, registry, "sentiment", queries)
    assert (
        [p["prediction"] for p in predictions]
        == pipeline.predict(queries).tolist()
        == [
            "pos",
            "neg",
        ]
    )
    assert info["signature"] == {"kind": "text", "n_features": None, "feature_names": None}


def test_graph_without_classes_needs_them(tmp_path: Path, registry: Registry) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["p"], axis=1)],
        "softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [None, 3])],
    )
    path = tmp_path / "net.onnx"
    path.write_bytes(
        helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9
        ).SerializeToString()
    )
    result = berth(registry, "models", "register", str(path), "--name", "net")
    assert result.exit_code == 1
    assert "output 'p' has shape ['N', 3]" in flat(
        result
    ) or "tell whether it is classification" in flat(result)
    register_ok(registry, str(path), "--name", "net", "--classes", "cat,dog,fox")
    card = registry.card("net")
    assert (card.task, card.classes, card.has_probabilities) == (
        "classification",
        ["cat", "dog", "fox"],
        True,
    )


def test_thread_settings_reach_the_session(tmp_path: Path, iris) -> None:  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    from berth.runtimes.onnx import OnnxModel

    x, y = iris
    path = tmp_path / "iris.onnx"
    model = LogisticRegression(max_iter=500).fit(x, y)
    path.write_bytes(skl2onnx.to_onnx(model, x[:1].astype(np.float32)).SerializeToString())
    settings = Settings(onnx_intra_op_threads=1, onnx_inter_op_threads=2)
    card = OnnxModel.inspect(path, settings)
    runtime = OnnxModel(card, tmp_path, settings)
    runtime.load()
    options = runtime.session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 2)


# -- conversion ----------------------------------------------------------------------------


def test_convert_tabular_example(examples_registry: Registry, make_client: ClientFactory) -> None:
    result = berth(examples_registry, "models", "convert", "tabular", "--to", "onnx")
    assert result.exit_code == 0, result.output
    assert "parity ok: labels equal on 201/201 rows" in flat(result)
    assert "registered tabular@2 (onnx, converted from tabular@1)" in flat(result)
    card = examples_registry.card("tabular", 2)
    assert card.framework == "onnx"
    assert card.tags["converted_from"] == "tabular@1"
    assert card.metrics["parity_labels_equal"] == card.metrics["parity_rows"] == 201
    assert card.metrics["parity_max_diff"] <= 1e-4
    assert card.metrics["speed_single_row_ms_onnx"] > 0
    assert card.metrics["accuracy"] == examples_registry.card("tabular", 1).metrics["accuracy"]
    assert card.signature == examples_registry.card("tabular", 1).signature
    assert card.classes == ["benign", "malignant"]

    example = card.input_example
    with make_client(examples_registry, models=["tabular"]) as client:
        original = client.post("/models/tabular/versions/1/predict", json=example).json()
        converted = client.post("/models/tabular/versions/2/predict", json=example).json()
    assert converted["version"] == 2
    assert converted["prediction"] == original["prediction"]
    for label, p in original["probabilities"].items():
        assert abs(converted["probabilities"][label] - p) < 1e-4


def test_convert_regression_records_relative_parity(examples_registry: Registry) -> None:
    result = berth(
        examples_registry,
        "models",
        "convert",
        "regression@production",
        "--to",
        "onnx",
        "--alias",
        "onnx",
    )
    assert result.exit_code == 0, result.output
    assert examples_registry.aliases("regression")["onnx"] == 2
    assert examples_registry.card("regression", 2).metrics["parity_max_diff"] < 1e-4


def test_convert_refuses_when_parity_fails(examples_registry: Registry) -> None:
    result = berth(
        examples_registry, "models", "convert", "intent", "--to", "onnx", "--tolerance", "1e-12"
    )
    assert result.exit_code == 1
    assert "parity FAILED" in flat(result)
    assert "was not registered" in flat(result)
    assert examples_registry.versions("intent") == [1]


def test_convert_only_sklearn(examples_registry: Registry) -> None:
    assert berth(examples_registry, "models", "convert", "tabular", "--to", "onnx").exit_code == 0
    again = berth(examples_registry, "models", "convert", "tabular@2", "--to", "onnx")
    assert again.exit_code == 1
    assert "tabular@2 is a onnx model: only scikit-learn models convert to ONNX" in flat(again)
