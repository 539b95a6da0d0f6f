"""scikit-learn compatible wrappers around PyTorch modules, so they register like any estimator.

    model = PyTorchClassifier(hidden=(32,), epochs=100).fit(X, y)
    joblib.dump(model, "model.joblib")   # then: berth models register model.joblib --name ...

`module` is a callable `module(n_features=..., n_outputs=..., **module_kwargs) -> nn.Module`
(default: a small multi-layer perceptron). Needs `berth[torch]`.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted
from torch import nn

__all__ = ["MLP", "PyTorchClassifier", "PyTorchEstimator", "PyTorchRegressor"]


class MLP(nn.Module):
    """Fully connected layers with ReLU between them."""

    def __init__(self, n_features: int, n_outputs: int, hidden: tuple[int, ...] = (64,)) -> None:
        super().__init__()
        sizes = [n_features, *hidden]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], n_outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class PyTorchEstimator(BaseEstimator):
    """Trains `module` with Adam on mini-batches; the fitted module is `module_`.

    `device`: `cpu` (default), `cuda`, ... or `auto` (a GPU where one is present).
    """

    def __init__(
        self,
        module: Any = None,
        module_kwargs: dict[str, Any] | None = None,
        hidden: tuple[int, ...] = (64,),
        epochs: int = 50,
        lr: float = 1e-2,
        batch_size: int = 64,
        weight_decay: float = 0.0,
        device: str = "cpu",
        random_state: int | None = 0,
    ) -> None:
        self.module = module
        self.module_kwargs = module_kwargs
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.device = device
        self.random_state = random_state

    def _device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def _build(self, n_features: int, n_outputs: int) -> nn.Module:
        if self.module is None:
            return MLP(n_features, n_outputs, tuple(self.hidden))
        built: nn.Module = self.module(
            n_features=n_features, n_outputs=n_outputs, **(self.module_kwargs or {})
        )
        return built

    def _train(self, x: Any, target: torch.Tensor, n_outputs: int, loss_fn: nn.Module) -> None:
        rows = np.asarray(x, dtype=np.float32)
        if self.random_state is not None:
            torch.manual_seed(self.random_state)
        device = self._device()
        self.n_features_in_ = rows.shape[1]
        self.module_ = self._build(rows.shape[1], n_outputs).to(device)
        optimizer = torch.optim.Adam(
            self.module_.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
        inputs = torch.as_tensor(rows, device=device)
        target = target.to(device)
        generator = torch.Generator().manual_seed(self.random_state or 0)
        self.module_.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(rows), generator=generator).to(device)
            for start in range(0, len(rows), self.batch_size):
                index = order[start : start + self.batch_size]
                optimizer.zero_grad()
                loss = loss_fn(self.module_(inputs[index]), target[index])
                loss.backward()
                optimizer.step()
        self.module_.eval()

    def _forward(self, x: Any) -> np.ndarray[Any, Any]:
        check_is_fitted(self, "module_")
        device = self._device()
        self.module_.to(device)
        with torch.inference_mode():
            tensor = torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)
            return np.asarray(self.module_(tensor).to("cpu").numpy(), dtype=np.float64)


class PyTorchClassifier(ClassifierMixin, PyTorchEstimator):
    """Cross-entropy training; `predict_proba` is the softmax of the module's outputs."""

    def fit(self, x: Any, y: Any) -> PyTorchClassifier:
        self.classes_, codes = np.unique(np.asarray(y), return_inverse=True)
        target = torch.as_tensor(codes, dtype=torch.long)
        self._train(x, target, len(self.classes_), nn.CrossEntropyLoss())
        return self

    def predict_proba(self, x: Any) -> np.ndarray[Any, Any]:
        scores = self._forward(x)
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]

    def predict(self, x: Any) -> np.ndarray[Any, Any]:
        return self.classes_[self.predict_proba(x).argmax(axis=1)]  # type: ignore[no-any-return]


class PyTorchRegressor(RegressorMixin, PyTorchEstimator):
    """Mean-squared-error training of a module with one output."""

    def fit(self, x: Any, y: Any) -> PyTorchRegressor:
        target = torch.as_tensor(np.asarray(y, dtype=np.float32).reshape(-1, 1))
        self._train(x, target, 1, nn.MSELoss())
        return self

    def predict(self, x: Any) -> np.ndarray[Any, Any]:
        return self._forward(x)[:, 0]
