"""Tensor data from and to JSON and raw bytes, and V2 outputs for every kind of label."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from berth.dataplane import Prediction
from berth.errors import InvalidInput
from berth.server.inference import RequestedOutput, output_specs, output_tensors
from berth.server.tensors import NUMERIC_DTYPES, from_json, from_raw, to_json, to_raw
from berth.types import ModelCard, Outputs, Signature


@pytest.mark.parametrize("datatype", sorted(NUMERIC_DTYPES))
def test_raw_round_trip_of_every_numeric_datatype(datatype: str) -> None:
    values = np.array([[0, 1, 1], [1, 0, 1]], dtype=NUMERIC_DTYPES[datatype])
    raw = to_raw(datatype, values.ravel())
    assert len(raw) == 6 * NUMERIC_DTYPES[datatype].itemsize
    decoded = from_raw("x", datatype, [2, 3], raw)
    assert decoded.tolist() == values.ravel().tolist()


def test_bytes_round_trip_and_truncation() -> None:
    items = np.array([b"", "caf\u00e9".encode(), b"x" * 300], dtype=object)
    raw = to_raw("BYTES", items)
    assert raw[:4] == struct.pack("<I", 0)
    assert from_raw("t", "BYTES", [3, 1], raw).tolist() == items.tolist()
    with pytest.raises(InvalidInput, match="BYTES element 2 is cut short"):
        from_raw("t", "BYTES", [3], raw[:-1])
    with pytest.raises(InvalidInput, match="ends inside an element's length"):
        from_raw("t", "BYTES", [1], b"\x01\x00")
    with pytest.raises(InvalidInput, match=r"shape \[2\] holds 2 elements, the data has 3"):
        from_raw("t", "BYTES", [2], raw)


def test_raw_size_must_match_the_shape() -> None:
    with pytest.raises(InvalidInput, match=r"shape \[2, 2\] of FP32 needs 16 bytes, got 12"):
        from_raw("f", "FP32", [2, 2], b"\x00" * 12)
    with pytest.raises(InvalidInput, match="dimensions must be >= 0"):
        from_raw("f", "FP32", [-1, 2], b"")


def test_json_values_are_checked() -> None:
    assert from_json("b", "BOOL", [2], [True, False]).tolist() == [True, False]
    assert from_json("i", "INT8", [1, 2], [[1, -2]]).dtype == np.int8
    with pytest.raises(InvalidInput, match="out of range for INT8"):
        from_json("i", "INT8", [1], [300])
    with pytest.raises(InvalidInput, match="element 1 is a boolean, not a FP64 value"):
        from_json("f", "FP64", [2], [1.0, True])
    with pytest.raises(InvalidInput, match="data must be a list"):
        from_json("f", "FP64", [1], 1.0)
    assert to_json("BYTES", np.array([b"a", "b"], dtype=object)) == ["a", "b"]


def card(classes: list[object] | None, task: str = "classification") -> ModelCard:
    return ModelCard(
        name="m",
        version=1,
        framework="sklearn",
        format="joblib",
        artifact="model.joblib",
        task=task,  # type: ignore[arg-type]
        signature=Signature(kind="tabular", n_features=2),
        classes=classes,  # type: ignore[arg-type]
        has_probabilities=classes is not None,
    )


@pytest.mark.parametrize(
    ("classes", "datatype", "data"),
    [
        ([0, 1], "INT64", [1, 0]),
        ([True, False], "BOOL", [False, True]),
        ([0.5, 1.5], "FP64", [1.5, 0.5]),
        (["no", "yes"], "BYTES", [b"yes", b"no"]),
        ([0, "mixed"], "BYTES", [b"mixed", b"0"]),
    ],
)
def test_label_datatype_follows_the_classes(
    classes: list[object], datatype: str, data: list[object]
) -> None:
    model = card(classes)
    assert output_specs(model)[0].datatype == datatype
    labels = [classes[1], classes[0]]
    proba = np.array([[0.2, 0.8], [0.7, 0.3]])
    outputs = output_tensors(Prediction(model, Outputs(labels=labels, probabilities=proba)), None)  # type: ignore[arg-type]
    assert [t.name for t in outputs] == ["label", "probabilities"]
    assert outputs[0].datatype == datatype
    assert outputs[0].data.tolist() == data
    assert outputs[1].shape == [2, 2]
    assert outputs[1].data.tolist() == [0.2, 0.8, 0.7, 0.3]


def test_regression_output_and_requested_order() -> None:
    model = card(None, task="regression")
    prediction = Prediction(model, Outputs(values=np.array([1.5, 2.5])))
    (value,) = output_tensors(prediction, [RequestedOutput("value", {"binary_data": True})])
    assert (value.name, value.datatype, value.shape) == ("value", "FP64", [2])
    assert value.parameters == {"binary_data": True}
