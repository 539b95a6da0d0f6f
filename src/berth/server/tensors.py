"""Open Inference Protocol tensors: datatypes, and tensor data from and to JSON lists and raw bytes.

Shared by the V2 REST routes and the gRPC servicer. A tensor's `data` is always flat (row-major);
BYTES data is a numpy object array of `bytes` (from raw or gRPC) or `str` (from JSON) elements.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from berth.errors import InvalidInput

__all__ = [
    "BYTES",
    "NUMERIC_DTYPES",
    "Tensor",
    "element_count",
    "from_json",
    "from_raw",
    "split_bytes",
    "to_json",
    "to_raw",
]

BYTES = "BYTES"

NUMERIC_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
"""Every fixed-size datatype, with its little-endian numpy dtype (BF16 has none and is refused)."""

_LENGTH = struct.Struct("<I")


@dataclass(slots=True)
class Tensor:
    """One named tensor of a request or response, its data flat in row-major order."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray[Any, Any]
    parameters: dict[str, Any] = field(default_factory=dict)


def check_datatype(name: str, datatype: str) -> str:
    if datatype != BYTES and datatype not in NUMERIC_DTYPES:
        known = ", ".join([*NUMERIC_DTYPES, BYTES])
        raise InvalidInput(
            f"tensor {name!r}: unsupported datatype {datatype!r} (supported: {known})"
        )
    return datatype


def element_count(name: str, shape: list[int]) -> int:
    """The number of elements a shape holds; every dimension must be a non-negative integer."""
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise InvalidInput(f"tensor {name!r}: invalid shape {shape}: dimensions must be >= 0")
    return math.prod(shape)


def from_raw(name: str, datatype: str, shape: list[int], raw: bytes) -> np.ndarray[Any, Any]:
    """Decode little-endian row-major bytes (BYTES: 4-byte length-prefixed elements)."""
    count = element_count(name, shape)
    check_datatype(name, datatype)
    if datatype == BYTES:
        items = split_bytes(name, raw)
        if len(items) != count:
            raise InvalidInput(
                f"tensor {name!r}: shape {shape} holds {count} elements, the data has {len(items)}"
            )
        array = np.empty(count, dtype=object)
        array[:] = items
        return array
    dtype = NUMERIC_DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(
            f"tensor {name!r}: shape {shape} of {datatype} needs {count * dtype.itemsize} bytes, "
            f"got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype)


def split_bytes(name: str, raw: bytes) -> list[bytes]:
    """The elements of BYTES raw data (each a 4-byte little-endian length, then its bytes)."""
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidInput(f"tensor {name!r}: BYTES data ends inside an element's length")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidInput(f"tensor {name!r}: BYTES element {len(items)} is cut short")
        items.append(raw[offset : offset + length])
        offset += length
    return items


def to_raw(datatype: str, data: np.ndarray[Any, Any]) -> bytes:
    """Encode flat data as the protocol's raw bytes."""
    if datatype == BYTES:
        parts = []
        for item in data.tolist():
            value = item if isinstance(item, bytes) else str(item).encode()
            parts += [_LENGTH.pack(len(value)), value]
        return b"".join(parts)
    return np.ascontiguousarray(data, dtype=NUMERIC_DTYPES[datatype]).tobytes()


def _flatten(data: Any, out: list[Any]) -> list[Any]:
    for item in data:
        if isinstance(item, list):
            _flatten(item, out)
        else:
            out.append(item)
    return out


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "BOOL": (bool,),
    "FP16": (int, float),
    "FP32": (int, float),
    "FP64": (int, float),
    BYTES: (str,),
}


def from_json(name: str, datatype: str, shape: list[int], data: Any) -> np.ndarray[Any, Any]:
    """Decode a JSON `data` list, flat or nested, checking every element's type."""
    count = element_count(name, shape)
    check_datatype(name, datatype)
    if not isinstance(data, list):
        raise InvalidInput(f"tensor {name!r}: data must be a list")
    flat = _flatten(data, [])
    if len(flat) != count:
        raise InvalidInput(
            f"tensor {name!r}: shape {shape} holds {count} elements, the data has {len(flat)}"
        )
    allowed = _JSON_TYPES.get(datatype, (int,))  # the integer datatypes take only integers
    for i, value in enumerate(flat):
        if type(value) not in allowed:  # bool is an int subclass: refused for numbers on purpose
            raise InvalidInput(
                f"tensor {name!r}: element {i} is {_describe(value)}, not a {datatype} value"
            )
    if datatype == BYTES:
        array = np.empty(count, dtype=object)
        array[:] = flat
        return array
    try:
        return np.asarray(flat, dtype=NUMERIC_DTYPES[datatype])
    except OverflowError:
        raise InvalidInput(f"tensor {name!r}: a value is out of range for {datatype}") from None


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    return f"{value!r}"


def to_json(datatype: str, data: np.ndarray[Any, Any]) -> list[Any]:
    """Flat JSON-ready values (BYTES as UTF-8 strings)."""
    if datatype == BYTES:
        return [
            item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
            for item in data.tolist()
        ]
    values: list[Any] = data.tolist()
    return values
