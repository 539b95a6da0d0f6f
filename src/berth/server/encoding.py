"""Fast JSON in and out (orjson), and the simple-JSON shape of predictions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
import simdjson
from starlette.responses import Response

from berth.dataplane import Prediction
from berth.errors import MalformedRequest
from berth.validation import NumberRows

__all__ = ["json_response", "parse_instances", "parse_json", "prediction_rows"]

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def parse_json(body: bytes) -> Any:
    """Parse a request body; NaN and Infinity are not JSON and are refused here."""
    if not body:
        raise MalformedRequest("request body is empty: send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        hint = ""
        if b"NaN" in body or b"Infinity" in body:
            hint = " (NaN and Infinity are not JSON numbers: send finite numbers)"
        raise MalformedRequest(f"request body is not valid JSON{hint}: {exc}") from None


def parse_instances(body: bytes) -> Any:
    """Parse a batch body: numeric instances as `NumberRows`, anything else as `parse_json` does.

    For 100 rows of 30 features this takes a quarter of the time of parsing to Python floats
    and checking each of them, and it makes no Python object per number.
    """
    rows = _number_rows(body) if b'"features"' in body else None
    return rows if rows is not None else parse_json(body)


def _number_rows(body: bytes) -> NumberRows | None:
    """`{"instances": [{"features": [numbers]}, ...]}` with rows of equal width, else None.

    simdjson refuses invalid JSON, NaN, Infinity, numbers beyond float range and integers beyond
    64 bits, and `as_buffer` any element that is not a number. It flattens nested arrays, so the
    body may hold no `[` beyond the instances' and each row's own. Any other shape goes the usual
    way, whose errors say what is wrong.
    """
    try:
        doc = simdjson.Parser().parse(body)
        if not isinstance(doc, simdjson.Object) or len(doc) != 1:
            return None
        instances = doc["instances"]
        if not isinstance(instances, simdjson.Array) or body.count(b"[") != len(instances) + 1:
            return None
        rows: list[bytes] = []  # float64 buffers
        for item in instances:
            if not isinstance(item, simdjson.Object) or len(item) != 1:
                return None
            features = item["features"]
            if not isinstance(features, simdjson.Array):
                return None
            if not rows:
                width = len(features)
            elif len(features) != width:
                return None
            rows.append(features.as_buffer(of_type="d"))
    except Exception:  # whatever simdjson cannot read this way, parse_json reads or explains
        return None
    if not rows:
        return None
    matrix = np.frombuffer(bytearray().join(rows), dtype=np.float64)
    return NumberRows(matrix.reshape(len(rows), width), body)


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(data, option=_OPTIONS), status, headers, "application/json")


def prediction_rows(prediction: Prediction) -> list[dict[str, Any]]:
    """One `{"prediction", "probabilities"?, "confidence"?}` object per row."""
    outputs, card = prediction.outputs, prediction.card
    if outputs.values is not None:
        return [{"prediction": value} for value in outputs.values.tolist()]
    labels = list(outputs.labels or [])
    if outputs.probabilities is None:
        return [{"prediction": label} for label in labels]
    keys = [str(c) for c in card.classes or []]
    probabilities = outputs.probabilities
    if probabilities.ndim != 2 or probabilities.shape[1] != len(keys):
        raise ValueError(f"{probabilities.shape} probabilities for {len(keys)} classes")
    table = probabilities.tolist()
    # one NumPy call beats a max() per row from about ten rows on
    confidences = probabilities.max(axis=1).tolist() if len(table) > 10 else map(max, table)
    return [
        {
            "prediction": label,
            "probabilities": dict(zip(keys, row, strict=False)),  # widths checked above
            "confidence": confidence,
        }
        for label, row, confidence in zip(labels, table, confidences, strict=True)
    ]
