"""Native LightGBM boosters (`.txt` model files); the task comes from the objective in the file."""

from __future__ import annotations

import re
from pathlib import Path

import lightgbm
import numpy as np

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

__all__ = ["LightGBMModel"]

CLASSIFICATION = {"binary", "multiclass", "softmax", "multiclassova", "ova", "ovr"}
DEFAULT_NAME = re.compile(r"^Column_\d+$")


def _load(path: Path) -> lightgbm.Booster:
    try:
        return lightgbm.Booster(model_file=str(path))
    except lightgbm.basic.LightGBMError as exc:
        raise InvalidInput(f"{path.name} is not a LightGBM model: {exc}") from None


class LightGBMModel(Model):
    """A `lightgbm.Booster` loaded from its text model file."""

    framework = "lightgbm"

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
        dump = booster.dump_model(num_iteration=0)
        objective = str(dump.get("objective", "regression"))
        kind = objective.split(maxsplit=1)[0]
        task: Task = "classification" if kind in CLASSIFICATION else "regression"
        if kind.startswith(("lambdarank", "rank_")):
            raise InvalidInput(f"{path.name}: ranking objective {kind} is not supported")
        if hints.task is not None and hints.task != task:
            raise InvalidInput(f"{path.name} was trained for {task} ({kind}), not {hints.task}")
        classes = None
        if task == "classification":
            classes = booster_classes(max(int(dump.get("num_class", 1)), 2), hints, path.name)
        recorded = [str(n) for n in booster.feature_name()]
        if all(DEFAULT_NAME.match(n) for n in recorded):
            recorded = []
        return ModelCard(
            framework=cls.framework,
            format="txt",
            artifact=path.name,
            task=task,
            signature=booster_signature(booster.num_feature(), recorded or None, feature_names),
            classes=classes,
            has_probabilities=task == "classification",
            libraries=versions_of("lightgbm"),
            description=f"LightGBM booster ({kind}, {booster.num_trees()} trees)",
            options={"objective": kind},
        )

    def load(self) -> None:
        path = self.directory / self.card.artifact
        try:
            self.booster = lightgbm.Booster(model_file=str(path))
        except lightgbm.basic.LightGBMError as exc:
            raise ModelLoadError(f"{self.card.ref}: cannot load {path.name}: {exc}") from exc

    def predict(self, batch: Batch) -> Outputs:
        scores = self.booster.predict(np.asarray(batch, dtype=np.float64))
        if self.card.task == "regression":
            return Outputs(
                values=np.asarray(scores, dtype=np.float64).reshape(len(batch), -1)[:, 0]
            )
        return outputs_from_scores(scores, self.card.classes or [])
