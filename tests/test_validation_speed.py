"""The vectorised decoding of numeric rows gives the same batch, and the same errors, as row by row."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from berth.errors import InvalidInput
from berth.types import Signature
from berth.validation import InputCodec

CODEC = InputCodec(Signature(kind="tabular", n_features=3), max_batch=1000)


def test_numeric_rows_decode_to_the_same_matrix_either_way() -> None:
    rows: list[Any] = [[1, 2.5, -3], [0.0, 1e300, 7]]
    fast = CODEC.decode_rows(rows)
    slow = np.asarray([CODEC._features(r, "") for r in rows], dtype=np.float64)
    assert isinstance(fast, np.ndarray)
    assert fast.dtype == np.float64
    assert fast.tolist() == slow.tolist() == [[1.0, 2.5, -3.0], [0.0, 1e300, 7.0]]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ([1.0, True, 3.0], "instances[1]: features[1] must be a number, got true"),
        ([1.0, "2", 3.0], "instances[1]: features[1] must be a number, got a string ('2')"),
        ([1.0, 2.0], "instances[1]: expected 3 features, got 2"),
        ([1.0, 2.0, 10**400], "instances[1]: features[2] must be a finite number, got 1000"),
        ([1.0, None, 3.0], "instances[1]: features[1] must be a number, got null"),
        ([1.0, float("inf"), 3.0], "instances[1]: features[1] must be a finite number, got inf"),
    ],
)
def test_bad_rows_still_get_exact_messages(row: list[Any], message: str) -> None:
    with pytest.raises(InvalidInput) as error:
        CODEC.decode_rows([[0.0, 0.0, 0.0], row])
    assert error.value.message.startswith(message)
