"""V2 REST bodies: compressed requests, JSON tensors and the binary tensor data extension.

With the binary extension a body is a JSON header of `Inference-Header-Content-Length` bytes followed
by the raw bytes of every tensor whose parameters carry `binary_data_size`, in the order listed.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from berth.errors import InvalidInput, MalformedRequest, PayloadTooLarge
from berth.server.encoding import parse_json
from berth.server.inference import InferRequest, RequestedOutput, input_specs
from berth.server.tensors import (
    BYTES,
    NUMERIC_DTYPES,
    Tensor,
    from_json,
    from_raw,
    split_bytes,
    to_json,
    to_raw,
)
from berth.types import ModelCard

__all__ = ["HEADER_LENGTH", "decompress", "encode_response", "parse_request"]

HEADER_LENGTH = "inference-header-content-length"


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo `Content-Encoding: gzip|deflate`, refusing bodies that inflate beyond `limit` bytes."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise MalformedRequest(f"unsupported Content-Encoding {encoding!r}: use gzip or deflate")
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # accepts both zlib and gzip headers
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise MalformedRequest(f"the {encoding} body cannot be decompressed: {exc}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"the decompressed body exceeds {limit} bytes (BERTH_MAX_BODY_BYTES)")
    return data


def _header_length(value: str | None, size: int) -> int | None:
    if value is None:
        return None
    if not value.strip().isdigit() or int(value) > size:
        raise MalformedRequest(
            f"Inference-Header-Content-Length {value!r} must be a number of bytes within the body"
        )
    return int(value)


def parse_request(body: bytes, header_length: str | None, card: ModelCard) -> InferRequest:
    """Parse an infer body, JSON alone or JSON plus binary tensors."""
    length = _header_length(header_length, len(body))
    if length == 0:
        return _raw_only(body, card)
    head, binary = (body, b"") if length is None else (body[:length], body[length:])
    data = parse_json(head)
    if not isinstance(data, dict):
        raise MalformedRequest("the inference request must be a JSON object")
    inputs = data.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise MalformedRequest('the inference request needs a non-empty "inputs" list')
    tensors = []
    offset = 0
    for i, item in enumerate(inputs):
        tensor, used = _input(i, item, binary, offset)
        tensors.append(tensor)
        offset += used
    if offset != len(binary):
        raise InvalidInput(
            f"the body has {len(binary) - offset} bytes beyond the inputs' binary_data_size"
        )
    return InferRequest(
        inputs=tensors,
        outputs=_outputs(data.get("outputs")),
        id=_id(data.get("id")),
        parameters=_parameters(data.get("parameters"), "the request"),
    )


def _input(i: int, item: Any, binary: bytes, offset: int) -> tuple[Tensor, int]:
    where = f"inputs[{i}]"
    if not isinstance(item, dict):
        raise MalformedRequest(f"{where} must be an object")
    name = item.get("name")
    datatype = item.get("datatype")
    shape = item.get("shape")
    if not isinstance(name, str) or not name:
        raise MalformedRequest(f'{where} needs a "name" string')
    if not isinstance(datatype, str):
        raise MalformedRequest(f'{where} ({name!r}) needs a "datatype" string')
    if not isinstance(shape, list):
        raise MalformedRequest(f'{where} ({name!r}) needs a "shape" list')
    parameters = _parameters(item.get("parameters"), where)
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in item:
            raise MalformedRequest(f'{where} ({name!r}) needs "data" or a binary_data_size')
        return Tensor(name, datatype, shape, from_json(name, datatype, shape, item["data"])), 0
    if type(size) is not int or size < 0:
        raise MalformedRequest(f"{where} ({name!r}): binary_data_size must be a number of bytes")
    if offset + size > len(binary):
        raise InvalidInput(f"input {name!r}: binary_data_size {size} runs past the end of the body")
    raw = binary[offset : offset + size]
    return Tensor(name, datatype, shape, from_raw(name, datatype, shape, raw)), size


def _raw_only(body: bytes, card: ModelCard) -> InferRequest:
    """`Inference-Header-Content-Length: 0`: the body is the one input's raw bytes."""
    spec = input_specs(card)[0]
    if spec.datatype == BYTES:
        shape = [len(split_bytes(spec.name, body))]
    else:
        width = spec.shape[1] * NUMERIC_DTYPES[spec.datatype].itemsize
        if width == 0 or len(body) % width:
            raise InvalidInput(
                f"the raw body of {len(body)} bytes is not a whole number of {spec.datatype} rows "
                f"of {spec.shape[1]} features"
            )
        shape = [len(body) // width, spec.shape[1]]
    tensor = Tensor(
        spec.name, spec.datatype, shape, from_raw(spec.name, spec.datatype, shape, body)
    )
    return InferRequest(inputs=[tensor], parameters={"binary_data_output": True})


def _outputs(value: Any) -> list[RequestedOutput] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise MalformedRequest('"outputs" must be a list')
    outputs = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise MalformedRequest(f'outputs[{i}] must be an object with a "name"')
        outputs.append(
            RequestedOutput(item["name"], _parameters(item.get("parameters"), f"outputs[{i}]"))
        )
    return outputs


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedRequest(f'"parameters" of {where} must be an object')
    return value


def _id(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedRequest('"id" must be a string')
    return value


def encode_response(
    head: dict[str, Any], outputs: list[Tensor], binary_default: bool
) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers; binary outputs follow the JSON header."""
    described = []
    blobs = []
    for tensor in outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": tensor.shape,
        }
        if tensor.parameters.get("binary_data", binary_default):
            raw = to_raw(tensor.datatype, tensor.data)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = to_json(tensor.datatype, tensor.data)
        described.append(entry)
    header = orjson.dumps({**head, "outputs": described})
    if not blobs:
        return header, {"content-type": "application/json"}
    return b"".join([header, *blobs]), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }
