"""The forest predictor gives scikit-learn's own answers, bit for bit, without its overhead."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from berth.dataplane import DataPlane
from berth.registry import Registry
from berth.runtimes import forest, runtime_for_file
from berth.runtimes.forest import forest_predictor
from berth.settings import Settings

RNG = np.random.default_rng(7)


@pytest.fixture(params=["walk all trees at once", "walk tree by tree"], autouse=True)
def walk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs with each of the two ways to walk the trees, whatever the batch size."""
    limit = 10**9 if request.param == "walk all trees at once" else 0
    monkeypatch.setattr(forest, "WALK_ALL_MAX", limit)
    monkeypatch.setattr(forest, "WALK_ALL_NODES", limit)


def _inputs(x: np.ndarray) -> list[np.ndarray]:
    """Training rows (leaf thresholds sit between them), random rows, one row, rounded rows,
    and rows of halves: on integer features (see the tests), exactly on the split thresholds."""
    noise = RNG.normal(size=(500, x.shape[1])) * x.std(axis=0) + x.mean(axis=0)
    return [x, noise, x[:1], np.round(x, 1), np.round(noise * 2) / 2]


@pytest.mark.parametrize(
    "estimator",
    [
        RandomForestClassifier(n_estimators=30, random_state=0),
        ExtraTreesClassifier(n_estimators=30, random_state=0),
        RandomForestClassifier(n_estimators=10, max_depth=3, class_weight="balanced"),
    ],
)
def test_classifier_probabilities_are_identical(estimator: Any) -> None:
    x, y = make_classification(
        n_samples=300, n_features=8, n_informative=5, n_classes=3, random_state=0
    )
    x = np.round(x * 2)  # integer features: their thresholds are halves, which inputs can hit
    estimator.fit(x, y)
    predict = forest_predictor(estimator)
    assert predict is not None
    for rows in _inputs(x):
        assert np.array_equal(predict(rows), estimator.predict_proba(rows))


@pytest.mark.parametrize(
    "estimator",
    [
        RandomForestRegressor(n_estimators=30, random_state=0),
        ExtraTreesRegressor(n_estimators=30, random_state=0),
    ],
)
def test_regressor_values_are_identical(estimator: Any) -> None:
    x, y = make_regression(n_samples=300, n_features=6, noise=5.0, random_state=0)
    x = np.round(x * 2)  # integer features: their thresholds are halves, which inputs can hit
    estimator.fit(x, y)
    predict = forest_predictor(estimator)
    assert predict is not None
    for rows in _inputs(x):
        assert np.array_equal(predict(rows), estimator.predict(rows))


def test_other_estimators_keep_their_own_predict() -> None:
    x, y = make_classification(n_samples=100, n_features=4, random_state=0)
    two_outputs = RandomForestRegressor(n_estimators=3).fit(x, np.c_[y, y])
    assert forest_predictor(two_outputs) is None
    assert forest_predictor(GradientBoostingClassifier(n_estimators=3).fit(x, y)) is None
    pipeline = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=3)).fit(x, y)
    assert forest_predictor(pipeline) is None


def test_served_forest_fitted_on_a_dataframe(registry: Registry, tmp_path: Path) -> None:
    """Served through the runtime: labels and probabilities equal scikit-learn's, and the
    feature order of a DataFrame-fitted forest is kept."""
    x, y = make_classification(n_samples=200, n_features=4, random_state=0)
    frame = pd.DataFrame(x, columns=["d", "a", "c", "b"])
    labels = np.where(y == 1, "yes", "no")
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(frame, labels)
    path = tmp_path / "forest.joblib"
    joblib.dump(forest, path)
    card = runtime_for_file(path).inspect(path, Settings(registry=registry.root))
    registry.register("forest", [path], card, alias="production")
    plane = DataPlane(registry, Settings(registry=registry.root, refresh_interval_s=0))
    instances = [dict(zip(frame.columns, row, strict=True)) for row in x[:20].tolist()]

    async def run() -> Any:
        await plane.start()
        try:
            return await plane.predict(None, None, {"instances": instances}, many=True)
        finally:
            await plane.stop()

    outputs = asyncio.run(run()).outputs
    assert outputs.labels == forest.predict(frame.iloc[:20]).tolist()
    assert np.array_equal(outputs.probabilities, forest.predict_proba(frame.iloc[:20]))
