"""Framework runtimes, imported lazily so that a missing extra fails with a clear message."""

from __future__ import annotations

import importlib
from pathlib import Path

from berth.errors import InvalidInput, MissingExtra
from berth.runtimes.base import Batch, Hints, Model, Vocabulary

__all__ = [
    "Batch",
    "Hints",
    "Model",
    "Vocabulary",
    "runtime_for",
    "runtime_for_file",
    "runtime_for_path",
]

# framework -> (module, class, extra that installs its dependencies)
RUNTIMES: dict[str, tuple[str, str, str]] = {
    "sklearn": ("berth.runtimes.sklearn", "SklearnModel", "sklearn"),
    "onnx": ("berth.runtimes.onnx", "OnnxModel", "onnx"),
    "xgboost": ("berth.runtimes.xgboost", "XGBoostModel", "xgboost"),
    "lightgbm": ("berth.runtimes.lightgbm", "LightGBMModel", "lightgbm"),
    "torch": ("berth.runtimes.torch", "TorchModel", "torch"),
    "custom": ("berth.runtimes.custom", "CustomModel", "sklearn"),
    "mlflow": ("berth.runtimes.mlflow", "MLflowModel", "mlflow"),
}

SUFFIXES: dict[str, str] = {
    ".joblib": "sklearn",
    ".jbl": "sklearn",
    ".pkl": "sklearn",
    ".pickle": "sklearn",
    ".skops": "sklearn",
    ".onnx": "onnx",
    ".json": "xgboost",
    ".ubj": "xgboost",
    ".txt": "lightgbm",
    ".pt": "torch",
    ".pth": "torch",
    ".pt2": "torch",
    ".py": "custom",
}


def runtime_for(framework: str) -> type[Model]:
    """The runtime class for `framework`, importing it (and its framework) now.

    `framework` is a name from RUNTIMES, or `package.module:Class` naming a custom `Model` subclass.
    """
    if ":" in framework:
        return _custom_runtime(framework)
    try:
        module_name, class_name, extra = RUNTIMES[framework]
    except KeyError:
        raise InvalidInput(
            f"unknown framework {framework!r}; known: {', '.join(sorted(RUNTIMES))}"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise MissingExtra(
            f"the {framework} runtime needs {exc.name or 'an optional package'}: "
            f"pip install 'berth[{extra}]'"
        ) from exc
    runtime: type[Model] = getattr(module, class_name)
    return runtime


def runtime_for_file(path: Path) -> type[Model]:
    """The runtime that reads files like `path`, chosen by its suffix."""
    framework = SUFFIXES.get(path.suffix.lower())
    if framework is None:
        raise InvalidInput(
            f"cannot tell the format of {path.name}: expected one of {', '.join(sorted(SUFFIXES))}"
        )
    return runtime_for(framework)


def _custom_runtime(path: str) -> type[Model]:
    module_name, _, class_name = path.partition(":")
    try:
        runtime = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise MissingExtra(f"cannot import the custom runtime {path}: {exc}") from exc
    if not (isinstance(runtime, type) and issubclass(runtime, Model)):
        raise InvalidInput(f"{path} is not a subclass of berth.runtimes.Model")
    return runtime


def runtime_for_path(path: Path, hints: Hints | None = None) -> type[Model]:
    """The runtime for a file or folder given to `berth models register`.

    A folder is an MLflow model (it has an `MLmodel` file) or a custom model (its class named by
    `hints.model_class`); a `.py` file is a custom model; any other file goes by its suffix.
    """
    if path.is_dir():
        if (path / "MLmodel").is_file() and (hints is None or hints.model_class is None):
            return runtime_for("mlflow")
        if hints is None or hints.model_class is None:
            raise InvalidInput(
                f"{path} is a folder: a custom model needs --class module:Class "
                "(a subclass of berth.runtimes.Model); an MLflow model has an MLmodel file"
            )
        return runtime_for("custom")
    return runtime_for_file(path)
