"""Native XGBoost boosters (`.json` or `.ubj`); the task comes from the objective in the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xgboost

from berth.errors import InvalidInput, ModelLoadError
from berth.runtimes.base import Batch, Hints, Model
from berth.runtimes.boosters import (
    booster_classes,
    booster_signature,
    outputs_from_scores,
    versions_of,
)
from berth.settings import Settings
from berth.types import ModelCard, Outputs, Task

__all__ = ["XGBoostModel"]

LABEL_OBJECTIVES = {"binary:hinge", "multi:softmax"}
"""Objectives whose prediction is the class index itself, without probabilities."""


def _load(path: Path) -> xgboost.Booster:
    try:
        return xgboost.Booster(model_file=str(path))
    except xgboost.core.XGBoostError as exc:
        raise InvalidInput(f"{path.name} is not an XGBoost model: {exc}") from None


class XGBoostModel(Model):
    """An `xgboost.Booster`, predicted with `inplace_predict` (thread-safe, no DMatrix copy)."""

    framework = "xgboost"

    @classmethod
    def inspect(
        cls,
        path: Path,
        settings: Settings,
        feature_names: list[str] | None = None,
        hints: Hints | None = None,
    ) -> ModelCard:
        hints = hints or Hints()
        booster = _load(path)
        learner = json.loads(booster.save_config())["learner"]
        objective = learner["objective"]["name"]
        n_class = int(learner["learner_model_param"].get("num_class", "0"))
        task: Task
        classes = None
        if objective.startswith(("binary:", "multi:")):
            task = "classification"
            classes = booster_classes(max(n_class, 2), hints, path.name)
        elif objective.startswith("rank:"):
            raise InvalidInput(f"{path.name}: ranking objective {objective} is not supported")
        else:
            task = "regression"
        if hints.task is not None and hints.task != task:
            raise InvalidInput(
                f"{path.name} was trained for {task} ({objective}), not {hints.task}"
            )
        return ModelCard(
            framework=cls.framework,
            format=path.suffix.lower().lstrip("."),
            artifact=path.name,
            task=task,
            signature=booster_signature(
                booster.num_features(), booster.feature_names, feature_names
            ),
            classes=classes,
            has_probabilities=task == "classification" and objective not in LABEL_OBJECTIVES,
            libraries=versions_of("xgboost", "xgboost-cpu"),
            description=f"XGBoost booster ({objective}, {booster.num_boosted_rounds()} rounds)",
            options={"objective": objective},
        )

    def load(self) -> None:
        path = self.directory / self.card.artifact
        try:
            self.booster = xgboost.Booster(model_file=str(path))
        except xgboost.core.XGBoostError as exc:
            raise ModelLoadError(f"{self.card.ref}: cannot load {path.name}: {exc}") from exc
        self.objective = str(self.card.options.get("objective", ""))

    def predict(self, batch: Batch) -> Outputs:
        rows = np.asarray(batch, dtype=np.float64)
        if self.objective == "binary:logitraw":
            margin = self.booster.inplace_predict(rows)
            return outputs_from_scores(1.0 / (1.0 + np.exp(-margin)), self.card.classes or [])
        scores = self.booster.inplace_predict(rows)
        if self.card.task == "regression":
            return Outputs(values=np.asarray(scores, dtype=np.float64).reshape(len(rows), -1)[:, 0])
        return outputs_from_scores(
            scores, self.card.classes or [], labels_only=self.objective in LABEL_OBJECTIVES
        )
