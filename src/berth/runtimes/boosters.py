"""What the XGBoost and LightGBM runtimes share: classes from hints, scores to berth Outputs."""

from __future__ import annotations

import platform
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np

from berth.errors import InvalidInput
from berth.runtimes.base import Hints
from berth.types import Label, Outputs, Signature

__all__ = ["booster_classes", "booster_signature", "outputs_from_scores", "versions_of"]


def booster_classes(n_classes: int, hints: Hints, file_name: str) -> list[Label]:
    """The user's class labels (checked against the booster), or 0..n-1 as the booster trained."""
    if hints.classes is None:
        return list(range(n_classes))
    if len(hints.classes) != n_classes:
        raise InvalidInput(
            f"{file_name} has {n_classes} classes but {len(hints.classes)} labels were given "
            f"({', '.join(map(str, hints.classes))})"
        )
    return list(hints.classes)


def booster_signature(
    n_features: int, recorded: list[str] | None, given: list[str] | None
) -> Signature:
    names = recorded or given
    if names is not None and len(names) != n_features:
        raise InvalidInput(
            f"the model takes {n_features} features but {len(names)} names were given"
        )
    return Signature(kind="tabular", n_features=n_features, feature_names=names)


def outputs_from_scores(scores: Any, classes: list[Label], *, labels_only: bool = False) -> Outputs:
    """Class probabilities (n x k, or n of p(class 1) for binary) or label indices as Outputs."""
    table = np.asarray(classes, dtype=object)
    raw = np.asarray(scores, dtype=np.float64)
    if labels_only:
        return Outputs(labels=table[raw.reshape(-1).astype(int)].tolist())
    if raw.ndim == 1:
        raw = np.column_stack([1.0 - raw, raw])
    return Outputs(labels=table[raw.argmax(axis=1)].tolist(), probabilities=raw)


def versions_of(*packages: str) -> dict[str, str]:
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for package in packages:
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions
