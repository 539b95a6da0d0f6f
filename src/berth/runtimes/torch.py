"""PyTorch models: `torch.export` (`.pt2`) and TorchScript files, or a state_dict plus its class.

Files do not record what they take or answer, so registration probes the module with a row of
zeros: the output width tells regression (1) from classification (k classes, or 1 with
`--task classification` for a sigmoid output). Outputs are taken as logits unless the probe shows
rows that already sum to one.
"""

from __future__ import annotations

import platform
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from berth.errors import InvalidInput, ModelLoadError
from berth.runtimes.base import Batch, Hints, Model
from berth.runtimes.boosters import booster_classes
from berth.runtimes.imports import load_class
from berth.settings import Settings
from berth.types import Label, ModelCard, Outputs, Signature, Task

__all__ = ["TorchModel"]


def _read_module(path: Path, options: dict[str, Any], device: str = "cpu") -> Any:
    if options.get("model_class"):
        cls = load_class(str(options["model_class"]))
        module = cls(**options.get("init_kwargs", {}))
        state = torch.load(path, map_location=device, weights_only=True)
        module.load_state_dict(state)
        return module.to(device).eval()
    if path.suffix == ".pt2":
        return torch.export.load(str(path)).module().to(device)
    with warnings.catch_warnings():  # TorchScript is deprecated, and still what many teams have
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location=device).eval()


def _format(path: Path, hints: Hints) -> str:
    if hints.model_class:
        return "state_dict"
    return "torch.export" if path.suffix == ".pt2" else "torchscript"


def _forward(module: Any, rows: Any, device: str) -> np.ndarray[Any, Any]:
    with torch.inference_mode():
        tensor = torch.as_tensor(np.asarray(rows, dtype=np.float32), device=device)
        output = module(tensor)
    return np.asarray(output.detach().to("cpu").numpy(), dtype=np.float64).reshape(len(rows), -1)


def _is_probabilities(scores: np.ndarray[Any, Any]) -> bool:
    return bool(
        scores.shape[1] > 1 and (scores >= 0).all() and np.allclose(scores.sum(axis=1), 1.0)
    )


class TorchModel(Model):
    """A TorchScript module or an `nn.Module` with its state_dict, on `settings.torch_device`."""

    framework = "torch"

    @classmethod
    def inspect(
        cls,
        path: Path,
        settings: Settings,
        feature_names: list[str] | None = None,
        hints: Hints | None = None,
    ) -> ModelCard:
        hints = hints or Hints()
        options: dict[str, Any] = {}
        if hints.model_class:
            options = {"model_class": hints.model_class, "init_kwargs": dict(hints.init_kwargs)}
        try:
            module = _read_module(path, options)
        except InvalidInput:
            raise
        except Exception as exc:
            hint = "" if options else " (for a state_dict, give the module with --class)"
            raise InvalidInput(f"cannot load {path.name} as PyTorch{hint}: {exc}") from None
        n_features = hints.n_features or (len(feature_names) if feature_names else None)
        if n_features is None:
            raise InvalidInput(
                f"{path.name} does not record its input width: give --n-features or --feature-names"
            )
        if feature_names is not None and len(feature_names) != n_features:
            raise InvalidInput(f"--n-features {n_features} but {len(feature_names)} names given")
        probe = np.random.default_rng(0).normal(size=(4, n_features))
        try:
            scores = _forward(module, probe, "cpu")
        except Exception as exc:
            raise InvalidInput(
                f"{path.name} failed on a batch of shape (4, {n_features}): {exc}"
            ) from None
        width = scores.shape[1]
        task: Task = hints.task or (
            "classification" if width > 1 or hints.classes else "regression"
        )
        classes: list[Label] | None = None
        if task == "classification":
            classes = booster_classes(max(width, 2), hints, path.name)
            options["outputs"] = "probabilities" if _is_probabilities(scores) else "logits"
        elif width != 1:
            raise InvalidInput(f"a regression model must answer one value per row, got {width}")
        return ModelCard(
            framework=cls.framework,
            format=_format(path, hints),
            artifact=path.name,
            task=task,
            signature=Signature(kind="tabular", n_features=n_features, feature_names=feature_names),
            classes=classes,
            has_probabilities=task == "classification",
            libraries={
                "python": platform.python_version(),
                "torch": torch.__version__,
                "numpy": np.__version__,
            },
            description=f"PyTorch {type(module).__name__}",
            options=options,
        )

    def load(self) -> None:
        self.device = self.settings.torch_device
        if self.settings.torch_threads:
            torch.set_num_threads(self.settings.torch_threads)
        path = self.directory / self.card.artifact
        try:
            self.module = _read_module(path, self.card.options, self.device)
        except Exception as exc:
            raise ModelLoadError(f"{self.card.ref}: cannot load {path.name}: {exc}") from exc
        self._classes = np.asarray(self.card.classes or [], dtype=object)

    def predict(self, batch: Batch) -> Outputs:
        scores = _forward(self.module, batch, self.device)
        if self.card.task == "regression":
            return Outputs(values=scores[:, 0])
        if scores.shape[1] == 1:  # one logit: sigmoid gives p(second class)
            p = 1.0 / (1.0 + np.exp(-scores[:, 0]))
            proba = np.column_stack([1.0 - p, p])
        elif self.card.options.get("outputs") == "probabilities":
            proba = scores
        else:
            shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
            proba = shifted / shifted.sum(axis=1, keepdims=True)
        return Outputs(labels=self._classes[proba.argmax(axis=1)].tolist(), probabilities=proba)
