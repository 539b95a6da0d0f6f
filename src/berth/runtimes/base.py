"""The one `Model` contract every framework runtime implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from berth.settings import Settings
from berth.types import Label, ModelCard, Outputs, Task

__all__ = ["Batch", "Hints", "LeanPredictor", "Model", "Vocabulary"]

Batch = list[str] | np.ndarray[Any, np.dtype[np.float64]]
"""A batch of rows: raw strings for text models, a 2-D float64 array for tabular ones."""
LeanPredictor = Callable[[Any], np.ndarray]
"""A batch in, what scikit-learn's `predict_proba` (or `predict`) would answer out: the
runtimes' faster paths for particular estimators (`forest.py`, `text_linear.py`)."""


@dataclass(frozen=True, slots=True)
class Hints:
    """What the user says about an artifact that does not record it itself (`berth models register`).

    A runtime uses what it cannot read from the file and checks the rest against the file.
    """

    task: Task | None = None
    classes: list[Label] | None = None
    n_features: int | None = None
    model_class: str | None = None
    """`module:Class` (or `module.Class`): a torch module for a state_dict, a custom `Model`."""
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for `model_class` (a torch module's constructor)."""


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """The terms a text model knows and how it cuts a text into terms, for the out-of-vocabulary
    rate that drift monitoring tracks."""

    analyze: Callable[[str], Sequence[str]]
    terms: Container[str]

    def oov_rate(self, text: str) -> float:
        """Share of the text's terms the model does not know (NaN for a text with no terms)."""
        tokens = self.analyze(text)
        if not tokens:
            return float("nan")
        terms = self.terms
        return sum(1 for token in tokens if token not in terms) / len(tokens)


class Model(ABC):
    """A loaded model version. Blocking calls; the data plane decides which thread runs them."""

    framework: ClassVar[str]

    def __init__(self, card: ModelCard, directory: Path, settings: Settings) -> None:
        self.card = card
        self.directory = directory
        self.settings = settings

    @classmethod
    @abstractmethod
    def inspect(
        cls,
        path: Path,
        settings: Settings,
        feature_names: list[str] | None = None,
        hints: Hints | None = None,
    ) -> ModelCard:
        """Load the artifact at `path` and describe it: task, signature, classes, libraries.

        `feature_names` names the inputs of a tabular model that does not record names itself;
        `hints` carries what else the user told about the file.
        """

    @abstractmethod
    def load(self) -> None:
        """Load the artifact from `directory` (checksums were verified by the caller)."""

    @abstractmethod
    def predict(self, batch: Batch) -> Outputs:
        """Predict a batch of rows; must be safe to call from several threads."""

    def metadata(self) -> ModelCard:
        return self.card

    def vocabulary(self) -> Vocabulary | None:
        """For a text model: its vocabulary (drift then tracks the out-of-vocabulary rate).
        None (the default) when the model has none or does not say (call after `load`)."""
        return None
