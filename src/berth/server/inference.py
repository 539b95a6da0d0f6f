"""The Open Inference Protocol (V2) between its wire formats and the data plane.

REST (server/v2.py) and gRPC (server/grpc/) both parse their wire format into `InferRequest`,
call `infer`, and encode the `Tensor` outputs it returns. Model metadata is derived here from the
registered signature, so both protocols describe a model the same way:

- text models: input `text`, BYTES, shape [-1] (or [-1, 1]), one string per row;
- tabular models: input `features`, FP64 (FP32 and the integer types too), shape [-1, n_features];
  or, when the model's features have names, one tensor per feature of shape [-1] (or [-1, 1]);
- classifiers: output `label` (BYTES, INT64, FP64 or BOOL, as the classes are), shape [-1], and
  `probabilities` (FP64, shape [-1, n_classes], columns in the order of the model's classes);
- regressors: output `value`, FP64, shape [-1].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from berth import __version__
from berth.dataplane import DataPlane, Prediction
from berth.errors import InvalidInput
from berth.server.tensors import BYTES, NUMERIC_DTYPES, Tensor
from berth.settings import Settings
from berth.types import ModelCard

__all__ = [
    "EXTENSIONS",
    "InferRequest",
    "RequestedOutput",
    "TensorSpec",
    "infer",
    "input_specs",
    "model_metadata",
    "output_specs",
    "server_metadata",
]

EXTENSIONS = ["binary_tensor_data", "model_repository"]
TEXT_INPUT = "text"
FEATURES_INPUT = "features"
FEATURE_DATATYPES = [d for d in NUMERIC_DTYPES if d != "BOOL"]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A tensor as model metadata declares it (-1 marks the batch dimension)."""

    name: str
    datatype: str
    shape: list[int]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


@dataclass(slots=True)
class RequestedOutput:
    """An output the client asked for, with its parameters (e.g. `binary_data`)."""

    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    """A decoded inference request; `outputs` None means every output."""

    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None = None
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


def input_specs(card: ModelCard) -> list[TensorSpec]:
    if card.signature.kind == "text":
        return [TensorSpec(TEXT_INPUT, BYTES, [-1])]
    return [TensorSpec(FEATURES_INPUT, "FP64", [-1, card.signature.n_features or 0])]


def _label_datatype(card: ModelCard) -> str:
    classes = card.classes or []
    if classes and all(isinstance(c, bool) for c in classes):
        return "BOOL"
    if classes and all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return "INT64"
    if classes and all(isinstance(c, int | float) and not isinstance(c, bool) for c in classes):
        return "FP64"
    return BYTES


def output_specs(card: ModelCard) -> list[TensorSpec]:
    if card.task == "regression":
        return [TensorSpec("value", "FP64", [-1])]
    specs = [TensorSpec("label", _label_datatype(card), [-1])]
    if card.has_probabilities:
        specs.append(TensorSpec("probabilities", "FP64", [-1, len(card.classes or [])]))
    return specs


def model_metadata(card: ModelCard, versions: list[int]) -> dict[str, Any]:
    """The V2 model metadata object (the gRPC servicer builds its message from it)."""
    return {
        "name": card.name,
        "versions": [str(v) for v in versions],
        "platform": card.framework,
        "inputs": [spec.as_dict() for spec in input_specs(card)],
        "outputs": [spec.as_dict() for spec in output_specs(card)],
    }


def server_metadata(settings: Settings) -> dict[str, Any]:
    extensions = [e for e in EXTENSIONS if settings.model_control or e != "model_repository"]
    return {"name": "berth", "version": __version__, "extensions": extensions}


def repository_index(dataplane: DataPlane) -> list[dict[str, str]]:
    """The served models' default versions and their state: READY or UNAVAILABLE (with why)."""
    entries = []
    for card in dataplane.served.values():
        ready = dataplane.model_ready(card.name)
        reason = "" if ready else "unloaded" if card.name in dataplane.unloaded else "not loaded"
        entries.append(
            {
                "name": card.name,
                "version": str(card.version),
                "state": "READY" if ready else "UNAVAILABLE",
                "reason": reason,
            }
        )
    return entries


def check_load_parameters(parameters: dict[str, Any]) -> None:
    """Refuse what Triton's load request may carry but Berth cannot honour."""
    for key in parameters:
        if key == "config" or key.startswith("file:"):
            raise InvalidInput(
                f"load parameter {key!r} is not supported: register a new version instead "
                "(berth models register)"
            )


# -- requests -> rows -----------------------------------------------------------------------


def _rows_of_column(tensor: Tensor) -> int:
    """Rows of a tensor that must be [n] or [n, 1]."""
    if len(tensor.shape) == 1 or (len(tensor.shape) == 2 and tensor.shape[1] == 1):
        return tensor.shape[0]
    raise InvalidInput(
        f"input {tensor.name!r} has shape {tensor.shape}; expected [-1] or [-1, 1] (one per row)"
    )


def _text_rows(card: ModelCard, inputs: list[Tensor]) -> list[Any]:
    if len(inputs) != 1:
        raise InvalidInput(
            f"model {card.name!r} takes one input ({TEXT_INPUT!r}, BYTES), got {len(inputs)}"
        )
    tensor = inputs[0]
    if tensor.datatype != BYTES:
        raise InvalidInput(
            f"input {tensor.name!r} has datatype {tensor.datatype}; model {card.name!r} takes "
            f"text as BYTES"
        )
    _rows_of_column(tensor)
    rows = []
    for i, item in enumerate(tensor.data.tolist()):
        try:
            rows.append(item.decode("utf-8") if isinstance(item, bytes) else item)
        except UnicodeDecodeError:
            raise InvalidInput(f"input {tensor.name!r}: element {i} is not valid UTF-8") from None
    return rows


def _check_numeric(tensor: Tensor) -> None:
    if tensor.datatype not in FEATURE_DATATYPES:
        raise InvalidInput(
            f"input {tensor.name!r} has datatype {tensor.datatype}; this model takes numbers "
            f"({', '.join(FEATURE_DATATYPES)})"
        )


def _tabular_rows(card: ModelCard, inputs: list[Tensor]) -> list[Any]:
    n_features = card.signature.n_features or 0
    names = card.signature.feature_names or []
    given = [t.name for t in inputs]
    if names and (len(inputs) > 1 or (inputs and given[0] in names and n_features == 1)):
        return _named_feature_rows(card, inputs)
    if len(inputs) != 1:
        raise InvalidInput(
            f"model {card.name!r} takes one input ({FEATURES_INPUT!r}, shape [-1, {n_features}])"
            + (" or one input per named feature" if names else "")
            + f", got {len(inputs)}"
        )
    tensor = inputs[0]
    _check_numeric(tensor)
    if len(tensor.shape) != 2 or tensor.shape[1] != n_features:
        raise InvalidInput(
            f"input {tensor.name!r} has shape {tensor.shape}; model {card.name!r} takes "
            f"[-1, {n_features}] (rows of {n_features} features)"
        )
    matrix = tensor.data.reshape(tensor.shape).astype(np.float64, copy=False)
    rows: list[Any] = matrix.tolist()
    return rows


def _named_feature_rows(card: ModelCard, inputs: list[Tensor]) -> list[Any]:
    names = card.signature.feature_names or []
    by_name = {t.name: t for t in inputs}
    unknown = [n for n in by_name if n not in names]
    if unknown:
        raise InvalidInput(f"unknown inputs: {', '.join(repr(n) for n in unknown[:5])}")
    missing = [n for n in names if n not in by_name]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise InvalidInput(
            f"missing inputs for features: {', '.join(repr(n) for n in missing[:5])}{more}"
        )
    counts = set()
    for tensor in inputs:
        _check_numeric(tensor)
        counts.add(_rows_of_column(tensor))
    if len(counts) > 1:
        raise InvalidInput("the feature inputs have different numbers of rows")
    columns = [by_name[name].data.astype(np.float64, copy=False) for name in names]
    rows: list[Any] = np.column_stack(columns).tolist()
    return rows


def rows_from_inputs(card: ModelCard, inputs: list[Tensor]) -> list[Any]:
    """The request's tensors as the bare rows `DataPlane.predict_batch` takes."""
    if not inputs:
        raise InvalidInput("the request has no inputs")
    names = [t.name for t in inputs]
    if len(set(names)) != len(names):
        raise InvalidInput("two inputs have the same name")
    rows = (
        _text_rows(card, inputs) if card.signature.kind == "text" else _tabular_rows(card, inputs)
    )
    if not rows:
        raise InvalidInput("the inputs hold no rows: send at least one")
    return rows


# -- prediction -> outputs ------------------------------------------------------------------


def _label_data(datatype: str, labels: list[Any]) -> np.ndarray[Any, Any]:
    if datatype == BYTES:
        array = np.empty(len(labels), dtype=object)
        array[:] = [str(label).encode() for label in labels]
        return array
    return np.asarray(labels, dtype=NUMERIC_DTYPES[datatype])


def output_tensors(prediction: Prediction, requested: list[RequestedOutput] | None) -> list[Tensor]:
    """The prediction as the model's output tensors, in the requested order (checked before)."""
    card, outputs = prediction.card, prediction.outputs
    specs = {spec.name: spec for spec in output_specs(card)}
    wanted = requested if requested is not None else [RequestedOutput(n) for n in specs]
    tensors = []
    for output in wanted:
        spec = specs[output.name]
        n = len(outputs)
        if spec.name == "value" and outputs.values is not None:
            tensor = Tensor(spec.name, spec.datatype, [n], outputs.values)
        elif spec.name == "label" and outputs.labels is not None:
            labels = list(outputs.labels)
            tensor = Tensor(spec.name, spec.datatype, [n], _label_data(spec.datatype, labels))
        elif spec.name == "probabilities" and outputs.probabilities is not None:
            probabilities = outputs.probabilities
            tensor = Tensor(
                spec.name, spec.datatype, list(probabilities.shape), probabilities.ravel()
            )
        else:
            raise InvalidInput(f"model {card.ref} produced no {spec.name!r} for this request")
        tensor.parameters = dict(output.parameters)
        tensors.append(tensor)
    return tensors


def check_requested(card: ModelCard, requested: list[RequestedOutput] | None) -> None:
    names = [spec.name for spec in output_specs(card)]
    for output in requested or []:
        if output.name not in names:
            raise InvalidInput(
                f"unknown output {output.name!r}; model {card.name!r} has {', '.join(names)}"
            )
        if output.parameters.get("classification"):
            raise InvalidInput("the classification extension is not supported: ask for 'label'")


async def infer(
    dataplane: DataPlane,
    card: ModelCard,
    version: str | None,
    request: InferRequest,
    request_id: str = "",
    key: str | None = None,
) -> tuple[Prediction, list[Tensor]]:
    """Decode the tensors by `card`'s signature, predict through the data plane, encode outputs.

    `card` is `dataplane.card(name, version)`; `version` is passed on as the client gave it, so the
    data plane's own version policy (its traffic route, keyed by `key` when sticky) applies when it
    is None.
    """
    check_requested(card, request.outputs)
    rows = rows_from_inputs(card, request.inputs)
    prediction = await dataplane.predict_batch(
        card.name, version, rows, request_id=request_id, key=key
    )
    return prediction, output_tensors(prediction, request.outputs)
