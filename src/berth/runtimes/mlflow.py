"""MLflow models (a folder with an `MLmodel` file): the signature comes from MLflow's own.

A model with the `sklearn` flavor is served through its estimator, so classification answers
probabilities as for any scikit-learn model; any other model is served through `mlflow.pyfunc`,
which answers labels (classification) or values (regression) as its output schema says.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from mlflow.models import Model as MLmodel

from berth.errors import InvalidInput, ModelLoadError
from berth.runtimes.base import Batch, Hints, Model
from berth.settings import Settings
from berth.types import Label, ModelCard, Outputs, Signature, Task

__all__ = ["MLflowModel", "read_mlmodel"]


def _native(value: Any) -> Label:
    item = value.item() if isinstance(value, np.generic) else value
    if not isinstance(item, str | int | float | bool):
        raise InvalidInput(f"label {value!r} is not a string, number or boolean")
    return item


def read_mlmodel(folder: Path) -> Any:
    if not (folder / "MLmodel").is_file():
        raise InvalidInput(f"{folder} is not an MLflow model (it has no MLmodel file)")
    return MLmodel.load(str(folder))


def _dtype_kind(spec_type: Any) -> str:
    dtype = spec_type.to_numpy() if hasattr(spec_type, "to_numpy") else np.dtype(spec_type)
    return "string" if dtype.kind in "USO" else "integer" if dtype.kind in "iub" else "float"


def _signature(meta: Any, feature_names: list[str] | None, hints: Hints) -> Signature:
    schema = meta.signature.inputs if meta.signature is not None else None
    if schema is None:
        n = hints.n_features or (len(feature_names) if feature_names else None)
        if n is None:
            raise InvalidInput(
                "the MLflow model has no signature: give --n-features or --feature-names"
            )
        return Signature(kind="tabular", n_features=n, feature_names=feature_names)
    types = schema.input_types()
    if schema.is_tensor_spec():
        shape = schema.inputs[0].shape
        if len(types) != 1 or len(shape) != 2 or shape[1] < 1:
            raise InvalidInput(f"unsupported MLflow tensor input {schema}: expected one (-1, n)")
        return Signature(kind="tabular", n_features=shape[1], feature_names=feature_names)
    kinds = [_dtype_kind(t) for t in types]
    if kinds == ["string"]:
        return Signature(kind="text")
    if "string" in kinds:
        raise InvalidInput(f"unsupported MLflow input {schema}: mixed text and numeric columns")
    names = [str(n) for n in schema.input_names()] if schema.has_input_names() else feature_names
    return Signature(kind="tabular", n_features=len(types), feature_names=names)


def _example(meta: Any, folder: Path, signature: Signature) -> Any:
    try:
        example = meta.load_input_example(str(folder))
    except Exception:
        return None
    if example is None:
        return None
    row = example.iloc[0].tolist() if isinstance(example, pd.DataFrame) else list(example[0])
    if signature.kind == "text":
        return {"text": str(row[0])}
    values = [float(v) for v in row]
    if signature.feature_names:
        return {"features": dict(zip(signature.feature_names, values, strict=True))}
    return {"features": values}


class MLflowModel(Model):
    """An MLflow model folder, registered with all its files."""

    framework = "mlflow"

    @classmethod
    def inspect(
        cls,
        path: Path,
        settings: Settings,
        feature_names: list[str] | None = None,
        hints: Hints | None = None,
    ) -> ModelCard:
        hints = hints or Hints()
        meta = read_mlmodel(path)
        signature = _signature(meta, feature_names, hints)
        libraries = {"python": platform.python_version(), "mlflow": mlflow.__version__}
        task: Task
        classes: list[Label] | None
        if "sklearn" in meta.flavors:
            from berth.runtimes.sklearn import describe_estimator

            estimator = mlflow.sklearn.load_model(str(path))
            task, _, classes, has_probabilities = describe_estimator(
                estimator, signature.feature_names
            )
            libraries["scikit-learn"] = str(meta.flavors["sklearn"].get("sklearn_version", ""))
            flavor = "sklearn"
        else:
            task, classes = cls._pyfunc_task(meta, hints)
            has_probabilities = False
            flavor = "python_function"
        return ModelCard(
            framework=cls.framework,
            format=flavor,
            artifact="MLmodel",
            task=task,
            signature=signature,
            classes=classes,
            has_probabilities=has_probabilities,
            libraries=libraries,
            description=f"MLflow model ({', '.join(meta.flavors)})",
            input_example=_example(meta, path, signature),
            tags={"mlflow_run_id": meta.run_id} if meta.run_id else {},
            options={"flavor": flavor},
        )

    @staticmethod
    def _pyfunc_task(meta: Any, hints: Hints) -> tuple[Task, list[Label] | None]:
        outputs = meta.signature.outputs if meta.signature is not None else None
        if hints.task is not None:
            task: Task = hints.task
        elif outputs is not None and len(outputs.input_types()) == 1:
            kind = _dtype_kind(outputs.input_types()[0])
            task = "regression" if kind == "float" else "classification"
        else:
            raise InvalidInput(
                "the MLflow model's output schema does not tell classification from regression: "
                "give --task"
            )
        return task, (hints.classes if task == "classification" else None)

    def load(self) -> None:
        folder = str(self.directory)
        try:
            if self.card.format == "sklearn":
                self.estimator = mlflow.sklearn.load_model(folder)
            else:
                self.pyfunc = mlflow.pyfunc.load_model(folder)
        except Exception as exc:
            raise ModelLoadError(f"{self.card.ref}: cannot load the MLflow model: {exc}") from exc
        meta = read_mlmodel(self.directory)
        schema = meta.signature.inputs if meta.signature is not None else None
        self._tensor = schema is None or schema.is_tensor_spec()
        self._dtypes = (
            [t.to_numpy() for t in schema.input_types()]
            if schema is not None and not self._tensor
            else []
        )
        self._columns = (
            list(schema.input_names()) if schema is not None and not self._tensor else []
        )
        self._classes = np.asarray(self.card.classes or [], dtype=object)

    def _frame(self, batch: Batch) -> Any:
        if self._tensor:
            return np.asarray(batch, dtype=np.float64)
        if self.card.signature.kind == "text":
            return pd.DataFrame({self._columns[0]: list(batch)})
        matrix = np.asarray(batch)
        return pd.DataFrame(
            {
                name: matrix[:, i].astype(dtype)
                for i, (name, dtype) in enumerate(zip(self._columns, self._dtypes, strict=True))
            }
        )

    def predict(self, batch: Batch) -> Outputs:
        frame = self._frame(batch)
        if self.card.format == "sklearn":
            if self.card.task == "regression":
                values = np.asarray(self.estimator.predict(frame), dtype=np.float64)
                return Outputs(values=values.reshape(len(batch), -1)[:, 0])
            if self.card.has_probabilities:
                proba = np.asarray(self.estimator.predict_proba(frame), dtype=np.float64)
                return Outputs(
                    labels=self._classes[proba.argmax(axis=1)].tolist(), probabilities=proba
                )
            raw = self.estimator.predict(frame)
        else:
            raw = self.pyfunc.predict(frame)
        array = np.asarray(raw.to_numpy() if hasattr(raw, "to_numpy") else raw)
        if self.card.task == "regression":
            return Outputs(values=array.astype(np.float64).reshape(len(batch), -1)[:, 0])
        return Outputs(labels=[_native(v) for v in array.reshape(len(batch), -1)[:, 0]])
