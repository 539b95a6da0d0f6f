"""ONNX graphs on onnxruntime: signature and task read from the graph's inputs and outputs.

Inputs: one 2-D numeric tensor (tabular, `[batch, n_features]`), one string tensor (text), or one
`[batch, 1]` numeric tensor per named feature. Outputs: a label tensor and a probability tensor (or
skl2onnx's ZipMap sequence of maps) for classification; one numeric tensor for regression.
"""

from __future__ import annotations

import json
import logging
import platform
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from berth.errors import InvalidInput, ModelLoadError
from berth.runtimes.base import Batch, Hints, Model
from berth.settings import Settings
from berth.types import Label, ModelCard, Outputs, Signature, Task

__all__ = ["OnnxModel", "session_options"]

log = logging.getLogger("berth.runtimes.onnx")

CLASSES_KEY = "berth.classes"
"""Metadata property where Berth's converter records the class labels (a JSON list)."""

NUMERIC = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}
LABEL_TYPES = {"tensor(string)", "tensor(int64)", "tensor(int32)", "tensor(bool)"}


@dataclass(frozen=True, slots=True)
class Layout:
    """How a batch becomes the graph's inputs and how its outputs become berth Outputs."""

    kind: str  # "matrix" | "text" | "columns"
    inputs: list[tuple[str, str, int]]  # (name, onnx type, rank)
    label: str | None
    scores: str | None


def session_options(settings: Settings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.onnx_intra_op_threads
    options.inter_op_num_threads = settings.onnx_inter_op_threads
    options.log_severity_level = 3  # errors only: onnxruntime warns about benign graph rewrites
    return options


def _session(source: Path | bytes, settings: Settings) -> ort.InferenceSession:
    data = source if isinstance(source, bytes) else str(source)
    return ort.InferenceSession(data, session_options(settings), providers=["CPUExecutionProvider"])


def _dim(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def _layout(session: ort.InferenceSession) -> tuple[Layout, Signature]:
    graph_inputs = session.get_inputs()
    specs = [(i.name, i.type, len(i.shape)) for i in graph_inputs]
    first = graph_inputs[0]
    if len(graph_inputs) == 1 and first.type == "tensor(string)":
        kind, signature = "text", Signature(kind="text")
    elif len(graph_inputs) == 1 and first.type in NUMERIC and len(first.shape) == 2:
        n_features = _dim(first.shape[1])
        if n_features is None:
            raise InvalidInput(
                f"input {first.name!r} has shape {first.shape}: the number of features "
                "(second dimension) must be fixed"
            )
        kind, signature = "matrix", Signature(kind="tabular", n_features=n_features)
    elif all(i.type in NUMERIC and len(i.shape) in (1, 2) for i in graph_inputs) and all(
        len(i.shape) == 1 or _dim(i.shape[1]) == 1 for i in graph_inputs
    ):
        names = [i.name for i in graph_inputs]
        kind = "columns"
        signature = Signature(kind="tabular", n_features=len(names), feature_names=names)
    else:
        shown = ", ".join(f"{i.name}: {i.type} {i.shape}" for i in graph_inputs)
        raise InvalidInput(
            f"unsupported ONNX inputs ({shown}): expected one [batch, n] numeric tensor, one "
            "string tensor, or one [batch, 1] numeric tensor per feature"
        )
    outputs = session.get_outputs()
    label = next((o.name for o in outputs if o.type in LABEL_TYPES and len(o.shape) <= 1), None)
    scores = next(
        (
            o.name
            for o in outputs
            if o.name != label and (o.type.startswith("seq(map(") or o.type in NUMERIC)
        ),
        None,
    )
    return Layout(kind, specs, label, scores), signature


def _classes_from_graph(path: Path) -> list[Label] | None:
    """Class labels from Berth's metadata or an ai.onnx.ml classifier node (needs `onnx`)."""
    try:
        import onnx
        import onnx.numpy_helper
    except ImportError:
        return None
    graph = onnx.load(str(path), load_external_data=False)
    for prop in graph.metadata_props:
        if prop.key == CLASSES_KEY:
            loaded: list[Label] = json.loads(prop.value)
            return loaded
    for initializer in graph.graph.initializer:
        if initializer.name == "classes":  # skl2onnx's classifiers built from standard ops
            values = onnx.numpy_helper.to_array(initializer).reshape(-1).tolist()
            return [v.decode() if isinstance(v, bytes) else v for v in values]
    for node in graph.graph.node:
        for attribute in node.attribute:
            if attribute.name == "classlabels_strings":
                return [s.decode() for s in attribute.strings]
            if attribute.name in ("classlabels_int64s", "classlabels_ints"):
                return [int(i) for i in attribute.ints]
    return None


class OnnxModel(Model):
    """An ONNX graph run by onnxruntime on the CPU."""

    framework = "onnx"

    @classmethod
    def inspect(
        cls,
        path: Path,
        settings: Settings,
        feature_names: list[str] | None = None,
        hints: Hints | None = None,
    ) -> ModelCard:
        hints = hints or Hints()
        try:
            session = _session(path, settings)
        except Exception as exc:
            raise InvalidInput(f"{path.name} is not a loadable ONNX model: {exc}") from None
        layout, signature = _layout(session)
        if feature_names is not None:
            if signature.kind != "tabular" or len(feature_names) != signature.n_features:
                raise InvalidInput(
                    f"{len(feature_names)} feature names given, but the model takes "
                    f"{signature.describe()}"
                )
            signature = signature.model_copy(update={"feature_names": feature_names})
        task, classes = cls._task_and_classes(path, session, layout, hints)
        meta = session.get_modelmeta()
        return ModelCard(
            framework=cls.framework,
            format="onnx",
            artifact=path.name,
            task=task,
            signature=signature,
            classes=classes,
            has_probabilities=task == "classification" and layout.scores is not None,
            libraries={
                "python": platform.python_version(),
                "onnxruntime": ort.__version__,
                **({"onnx": importlib_metadata.version("onnx")} if _has("onnx") else {}),
            },
            description=f"ONNX graph ({meta.producer_name or 'unknown producer'})",
        )

    @staticmethod
    def _task_and_classes(
        path: Path, session: ort.InferenceSession, layout: Layout, hints: Hints
    ) -> tuple[Task, list[Label] | None]:
        task: Task | None = hints.task
        if task is None:
            task = "classification" if layout.label is not None else None
        if task is None:
            out = session.get_outputs()[0]
            width = _dim(out.shape[-1]) if len(out.shape) == 2 else 1
            if width == 1 and hints.classes is None:
                task = "regression"
            elif hints.classes is not None:
                task = "classification"
            else:
                raise InvalidInput(
                    f"output {out.name!r} has shape {out.shape}: tell whether it is "
                    "classification (--task classification --classes a,b,...) or regression"
                )
        if task == "regression":
            return task, None
        classes = hints.classes or _classes_from_graph(path)
        if classes is None:
            raise InvalidInput(
                f"{path.name} does not record its class labels: give them with --classes"
            )
        return task, classes

    def load(self) -> None:
        path = self.directory / self.card.artifact
        try:
            self.session = _session(path, self.settings)
        except Exception as exc:
            raise ModelLoadError(f"{self.card.ref}: cannot load {path.name}: {exc}") from exc
        self.layout, _ = _layout(self.session)
        self._classes = np.asarray(self.card.classes or [], dtype=object)

    def predict(self, batch: Batch) -> Outputs:
        results = self.session.run(None, self._feed(batch))
        by_name = dict(zip([o.name for o in self.session.get_outputs()], results, strict=True))
        if self.card.task == "regression":
            first = np.asarray(results[0], dtype=np.float64)
            return Outputs(values=first.reshape(len(batch), -1)[:, 0])
        scores = self._scores(by_name[self.layout.scores]) if self.layout.scores else None
        if self.layout.label is not None:
            labels = [_native(v) for v in np.asarray(by_name[self.layout.label]).reshape(-1)]
        elif scores is not None:
            labels = self._classes[scores.argmax(axis=1)].tolist()
        else:
            labels = self._classes[np.asarray(results[0]).reshape(-1).astype(int)].tolist()
        return Outputs(labels=labels, probabilities=scores)

    def _feed(self, batch: Batch) -> dict[str, Any]:
        layout = self.layout
        if layout.kind == "text":
            name, _, rank = layout.inputs[0]
            texts = np.asarray(batch, dtype=object)
            return {name: texts.reshape(-1, 1) if rank == 2 else texts}
        matrix = np.asarray(batch)
        if layout.kind == "matrix":
            name, onnx_type, _ = layout.inputs[0]
            return {name: matrix.astype(NUMERIC[onnx_type], copy=False)}
        return {
            name: matrix[:, i : i + 1]
            .astype(NUMERIC[onnx_type])
            .reshape((-1, 1) if rank == 2 else (-1,))
            for i, (name, onnx_type, rank) in enumerate(layout.inputs)
        }

    def _scores(self, raw: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
        if isinstance(raw, list):  # ZipMap: one {class: probability} per row
            keys = self.card.classes or []
            raw = [[row[k] for k in keys] for row in raw]
        scores = np.asarray(raw, dtype=np.float64).reshape(len(raw), -1)
        # tree ensembles sum in float32 and can land a hair below zero
        return np.clip(scores, 0.0, None)


def _native(value: Any) -> Label:
    item = value.item() if isinstance(value, np.generic) else value
    if isinstance(item, bytes):
        item = item.decode()
    if not isinstance(item, str | int | float | bool):
        raise InvalidInput(f"class label {value!r} is not a string, number or boolean")
    return item


def _has(package: str) -> bool:
    try:
        importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return False
    return True
