"""Property-based tests of `InputCodec`: any JSON either decodes exactly or is refused with
InvalidInput/PayloadTooLarge, never another exception."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from berth.errors import InvalidInput, PayloadTooLarge
from berth.types import Signature
from berth.validation import InputCodec

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAMES = ["age", "income", "score"]
TABULAR = InputCodec(Signature(kind="tabular", n_features=3), max_batch=20)
NAMED = InputCodec(Signature(kind="tabular", n_features=3, feature_names=NAMES), max_batch=20)
TEXT = InputCodec(Signature(kind="text"), max_batch=20)

finite = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**53), 2**53))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers()
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(["text", "features", "instances", *NAMES, "x"]), children, max_size=4
        )
    ),
    max_leaves=25,
)


@SETTINGS
@given(row=st.lists(finite, min_size=3, max_size=3))
def test_three_finite_numbers_decode_exactly(row: list[float]) -> None:
    batch = TABULAR.decode_one({"features": row})
    assert isinstance(batch, np.ndarray)
    assert batch.shape == (1, 3)
    assert batch.dtype == np.float64
    assert batch[0].tolist() == [float(v) for v in row]


@SETTINGS
@given(row=st.lists(finite, max_size=8).filter(lambda r: len(r) != 3))
def test_wrong_length_names_both_counts(row: list[float]) -> None:
    with pytest.raises(InvalidInput, match=f"^expected 3 features, got {len(row)}$"):
        TABULAR.decode_one({"features": row})


@SETTINGS
@given(values=st.lists(finite, min_size=3, max_size=3), order=st.permutations(NAMES))
def test_named_features_follow_the_signature_order(values: list[float], order: list[str]) -> None:
    given_row = dict(zip(NAMES, values, strict=True))
    shuffled = {name: given_row[name] for name in order}
    assert NAMED.decode_one({"features": shuffled})[0].tolist() == [float(v) for v in values]


@SETTINGS
@given(
    row=st.lists(finite, min_size=3, max_size=3),
    position=st.integers(0, 2),
    bad=st.sampled_from([float("nan"), float("inf"), -float("inf"), 10**400]),
)
def test_non_finite_values_are_refused(row: list[float], position: int, bad: Any) -> None:
    row[position] = bad
    with pytest.raises(InvalidInput, match=rf"features\[{position}\] must be a finite number"):
        TABULAR.decode_one({"features": row})


@SETTINGS
@given(rows=st.lists(st.lists(finite, min_size=3, max_size=3), min_size=1, max_size=40))
def test_batches_decode_row_for_row_up_to_the_limit(rows: list[list[float]]) -> None:
    body = {"instances": [{"features": r} if i % 2 else r for i, r in enumerate(rows)]}
    if len(rows) > 20:
        with pytest.raises(PayloadTooLarge, match=f"batch of {len(rows)} instances"):
            TABULAR.decode_many(body)
        return
    batch = TABULAR.decode_many(body)
    assert isinstance(batch, np.ndarray)
    assert batch.tolist() == [[float(v) for v in r] for r in rows]


@SETTINGS
@given(text=st.text(min_size=1, max_size=50))
def test_text_is_kept_verbatim_or_refused_when_blank(text: str) -> None:
    if text.strip():
        assert TEXT.decode_one({"text": text}) == [text]
    else:
        with pytest.raises(InvalidInput, match="text must not be empty"):
            TEXT.decode_one({"text": text})


@SETTINGS
@given(body=json_values)
def test_any_json_decodes_or_is_refused_cleanly(body: Any) -> None:
    for codec in (TABULAR, NAMED, TEXT):
        for decode in (codec.decode_one, codec.decode_many):
            try:
                batch = decode(body)
            except (InvalidInput, PayloadTooLarge) as exc:
                assert exc.message
                assert exc.status_code in (400, 413, 422)
            else:
                assert len(batch) >= 1
                if isinstance(batch, np.ndarray):
                    assert np.isfinite(batch).all()
                else:
                    assert all(isinstance(t, str) and t.strip() for t in batch)
