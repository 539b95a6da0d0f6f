"""The data Berth passes between layers: model cards, signatures and prediction outputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Label",
    "ModelCard",
    "Outputs",
    "Signature",
    "Task",
]

Task = Literal["classification", "regression"]
Label = str | int | bool | float


class Signature(BaseModel):
    """What one input row looks like: raw text, or a fixed number of (optionally named) numbers."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["text", "tabular"]
    n_features: int | None = None
    feature_names: list[str] | None = None

    def describe(self) -> str:
        if self.kind == "text":
            return "raw text"
        names = f" named {', '.join(self.feature_names)}" if self.feature_names else ""
        return f"{self.n_features} numeric features{names}"


class ModelCard(BaseModel):
    """Everything recorded about one registered version (stored as `model.json` beside the artifact).

    `name` and `version` are not stored in the file: the registry path is the single source of truth.
    """

    model_config = ConfigDict(extra="ignore")

    name: str = ""
    version: int = 0
    framework: str
    format: str
    artifact: str
    task: Task
    signature: Signature
    classes: list[Label] | None = None
    has_probabilities: bool = False
    description: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict, description="file name -> sha256")
    libraries: dict[str, str] = Field(default_factory=dict)
    input_example: Any = None
    reference: dict[str, Any] | None = None
    created_at: datetime | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="what the runtime needs to load the artifact (e.g. a torch module's class)",
    )

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True, slots=True)
class Outputs:
    """What a runtime's `predict` returns for a batch of n rows.

    Classification fills `labels` (n) and, when the model has them, `probabilities` (n x classes,
    columns in the order of `classes`). Regression fills `values` (n).
    """

    labels: Sequence[Label] | None = None
    probabilities: np.ndarray[Any, np.dtype[np.float64]] | None = None
    values: np.ndarray[Any, np.dtype[np.float64]] | None = None

    def __len__(self) -> int:
        for part in (self.labels, self.values, self.probabilities):
            if part is not None:
                return len(part)
        return 0


def utcnow() -> datetime:
    from datetime import UTC

    return datetime.now(UTC)
