"""Fast JSON in and out (orjson), and the simple-JSON shape of predictions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

from berth.dataplane import Prediction
from berth.errors import MalformedRequest

__all__ = ["json_response", "parse_json", "prediction_rows"]

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
