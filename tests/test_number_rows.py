"""Numeric batch bodies read straight from their bytes (server/encoding.py `parse_instances`)
decode to the same matrix, bit for bit, and fail with the same errors, as the usual parse."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from berth.errors import BerthError
from berth.server.encoding import parse_instances, parse_json
from berth.types import Signature
from berth.validation import InputCodec, NumberRows

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CODEC = InputCodec(Signature(kind="tabular", n_features=3), max_batch=20)
NAMED = InputCodec(Signature(kind="tabular", n_features=3, feature_names=["a", "b", "c"]), 20)
TEXT = InputCodec(Signature(kind="text"), max_batch=20)


def number_text(value: float | int, style: int) -> str:
    """One number as a client might write it: shortest, 17 digits, exponent forms, or an int."""
    if isinstance(value, int):
        return str(value)
    return [repr(value), f"{value:.17g}", f"{value:.6e}", f"{value:E}", f"{value:.3f}"][style]


finite = st.floats(allow_nan=False, allow_infinity=False)
number = st.one_of(
    st.tuples(finite, st.integers(0, 4)).map(lambda p: number_text(*p)),
    st.integers(-(2**70), 2**70).map(str),  # beyond 64 bits too
    st.sampled_from(["-0", "0", "-0.0", "1e-320", "2.2250738585072011e-308", "1e308", "1e309"]),
)
junk = st.sampled_from(["true", "false", "null", '"1"', "[1]", "[]", '{"a": 1}', "NaN", "1e999"])
value = st.one_of(number, number, number, junk)
row = st.lists(value, min_size=2, max_size=4).map(lambda vs: "[" + ", ".join(vs) + "]")
instance = st.one_of(
    row.map(lambda r: '{"features": ' + r + "}"),
    row.map(lambda r: '{"features": ' + r + ', "x": 1}'),
    st.just('{"text": "hi"}'),
    st.just('{"features": {"a": 1, "b": 2, "c": 3}}'),
    row,
)
body = st.one_of(
    st.lists(instance, max_size=22).map(lambda items: '{"instances": [' + ", ".join(items) + "]}"),
    st.lists(instance, min_size=1, max_size=3).map(
        lambda items: '{"instances": [' + ", ".join(items) + '], "user": "u1"}'
    ),
)


def decoded(parse: Callable[[bytes], Any], codec: InputCodec, raw: bytes) -> tuple[str, Any]:
    """("ok", the batch's bytes) or (the error's class name, its message)."""
    try:
        batch = codec.decode_many(parse(raw))
    except BerthError as exc:
        return type(exc).__name__, exc.message
    return "ok", np.asarray(batch).tobytes() if not isinstance(batch, list) else batch


def usual(codec: InputCodec, raw: bytes) -> tuple[str, Any]:
    return decoded(parse_json, codec, raw)


def direct(codec: InputCodec, raw: bytes) -> tuple[str, Any]:
    return decoded(parse_instances, codec, raw)


@SETTINGS
@given(text=body)
def test_any_batch_body_decodes_or_fails_as_the_usual_parse_does(text: str) -> None:
    raw = text.encode()
    for codec in (CODEC, NAMED, TEXT):
        assert direct(codec, raw) == usual(codec, raw)


@SETTINGS
@given(
    rows=st.lists(
        st.lists(
            st.tuples(finite, st.integers(0, 4)).map(lambda p: number_text(*p)),
            min_size=3,
            max_size=3,
        ),
        min_size=1,
        max_size=20,
    )
)
def test_plain_numeric_bodies_take_the_direct_path_bit_for_bit(rows: list[list[str]]) -> None:
    raw = (
        '{"instances": [' + ", ".join('{"features": [' + ", ".join(r) + "]}" for r in rows) + "]}"
    ).encode()
    parsed = parse_instances(raw)
    assert isinstance(parsed, NumberRows)
    batch = CODEC.decode_many(parsed)
    # as JSON reads them: "-0" is the integer 0, so +0.0
    expected = np.array([[float(orjson.loads(v)) for v in r] for r in rows], dtype=np.float64)
    assert isinstance(batch, np.ndarray)
    assert batch.dtype == np.float64 and batch.flags.writeable
    assert batch.tobytes() == expected.tobytes()  # -0.0 and every last bit included


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"instances": [{"features": [1, true, 3]}]}', "features[1] must be a number, got true"),
        ('{"instances": [{"features": [1, [2], 3]}]}', "features[1] must be a number, got a list"),
        ('{"instances": [{"features": [[1], [2], [3]]}]}', "must be a number, got a list"),
        ('{"instances": [{"features": [1, 2]}]}', "expected 3 features, got 2"),
        ('{"instances": [{"features": [1, 2, 3]}, {"features": [1, 2]}]}', "expected 3 features"),
        ('{"instances": [{"features": [1, 2, 1e999]}]}', "not valid JSON"),
        ('{"instances": [{"features": [1, 2, NaN]}]}', "NaN and Infinity are not JSON numbers"),
        ('{"instances": [{"features": [1, 2, 3]}]} x', "not valid JSON"),
        ('{"instances": [{"features": [1, 2, 3], "x": 1}]}', "unexpected field 'x'"),
        ('{"instances": [{"features": [1, 2, 3]}], "x": 1}', "unexpected field 'x'"),
        ('{"instances": []}', '"instances" is empty'),
        (
            '{"instances": [' + ", ".join(['{"features": [1, 2, 3]}'] * 21) + "]}",
            "exceeds the limit",
        ),
    ],
)
def test_bodies_the_direct_path_cannot_take_get_the_usual_errors(text: str, error: str) -> None:
    kind, message = direct(CODEC, text.encode())
    assert kind != "ok"
    assert error in message
    assert (kind, message) == usual(CODEC, text.encode())


def test_duplicate_keys_mean_what_they_mean_to_the_usual_parse() -> None:
    raw = b'{"instances": [{"features": [1, 2, 3]}], "instances": [{"features": [4, 5, 6]}]}'
    assert direct(CODEC, raw) == usual(CODEC, raw) == ("ok", np.array([[4.0, 5, 6]]).tobytes())


def test_the_matrix_is_only_used_when_it_fits_the_signature() -> None:
    raw = orjson.dumps({"instances": [{"features": [1.5, 2, 3, 4]}]})
    parsed = parse_instances(raw)
    assert isinstance(parsed, NumberRows)
    assert direct(CODEC, raw) == ("InvalidInput", "instances[0]: expected 3 features, got 4")
    assert direct(TEXT, raw)[0] == "InvalidInput"
    wide = InputCodec(Signature(kind="tabular", n_features=4), max_batch=20)
    assert direct(wide, raw) == ("ok", np.array([[1.5, 2, 3, 4]]).tobytes())
    assert json.loads(raw) == parsed.parsed()
