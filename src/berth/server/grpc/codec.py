"""Protobuf messages of `inference.GRPCInferenceService` to and from the shared tensor types."""

from __future__ import annotations

from typing import Any

import numpy as np

from berth.errors import InvalidInput
from berth.server.inference import InferRequest, RequestedOutput, TensorSpec
from berth.server.proto import inference_pb2 as pb
from berth.server.tensors import (
    BYTES,
    NUMERIC_DTYPES,
    Tensor,
    check_datatype,
    element_count,
    from_raw,
    to_raw,
)

__all__ = ["infer_request", "infer_response", "parameters", "tensor_metadata"]

# The typed field of InferTensorContents for each datatype; FP16 travels only as raw bytes.
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    BYTES: "bytes_contents",
}


def parameters(entries: Any) -> dict[str, Any]:
    """A protobuf map of InferParameter as plain Python values."""
    values = {}
    for key, value in entries.items():
        choice = value.WhichOneof("parameter_choice")
        if choice is not None:
            values[key] = getattr(value, choice)
    return values


def _typed(tensor: Any, shape: list[int]) -> np.ndarray[Any, Any]:
    name, datatype = tensor.name, tensor.datatype
    field = _CONTENTS.get(datatype)
    if field is None:
        raise InvalidInput(f"input {name!r}: {datatype} data must be sent in raw_input_contents")
    values = list(getattr(tensor.contents, field))
    count = element_count(name, shape)
    if len(values) != count:
        raise InvalidInput(
            f"input {name!r}: shape {shape} holds {count} elements, {field} has {len(values)}"
        )
    if datatype == BYTES:
        array = np.empty(count, dtype=object)
        array[:] = values
        return array
    try:
        return np.asarray(values, dtype=NUMERIC_DTYPES[datatype])
    except OverflowError:
        raise InvalidInput(f"input {name!r}: a value is out of range for {datatype}") from None


def infer_request(message: Any) -> InferRequest:
    """Decode a ModelInferRequest, whose data is either all raw or all typed."""
    raw = list(message.raw_input_contents)
    if raw and len(raw) != len(message.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs"
        )
    tensors = []
    for i, tensor in enumerate(message.inputs):
        shape = list(tensor.shape)
        check_datatype(tensor.name, tensor.datatype)
        if raw:
            if tensor.contents.ByteSize():
                raise InvalidInput(
                    f"input {tensor.name!r} has typed contents, but the request uses "
                    "raw_input_contents: use one or the other for all inputs"
                )
            data = from_raw(tensor.name, tensor.datatype, shape, raw[i])
        else:
            data = _typed(tensor, shape)
        tensors.append(
            Tensor(tensor.name, tensor.datatype, shape, data, parameters(tensor.parameters))
        )
    outputs = [RequestedOutput(o.name, parameters(o.parameters)) for o in message.outputs]
    return InferRequest(
        inputs=tensors,
        outputs=outputs or None,
        id=message.id,
        parameters=parameters(message.parameters),
    )


def infer_response(name: str, version: str, request_id: str, outputs: list[Tensor]) -> Any:
    """A ModelInferResponse with every output in raw_output_contents (all tritonclient reads)."""
    response = pb.ModelInferResponse(model_name=name, model_version=version, id=request_id)
    for tensor in outputs:
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        response.raw_output_contents.append(to_raw(tensor.datatype, tensor.data))
    return response


def tensor_metadata(specs: list[TensorSpec]) -> list[Any]:
    return [
        pb.ModelMetadataResponse.TensorMetadata(name=s.name, datatype=s.datatype, shape=s.shape)
        for s in specs
    ]
