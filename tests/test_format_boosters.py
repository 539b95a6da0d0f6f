"""XGBoost and LightGBM: native booster files and their scikit-learn wrappers."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from berth.registry import Registry
from tests.conftest import ClientFactory
from tests.formats import berth, flat, predict_rest, register_ok

xgboost = pytest.importorskip("xgboost")
lightgbm = pytest.importorskip("lightgbm")


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_xgboost_multiclass_booster(
    suffix: str, tmp_path: Path, registry: Registry, make_client: ClientFactory
) -> None:
    x, y = load_iris(return_X_y=True)
    booster = xgboost.train(
        {"objective": "multi:softprob", "num_class": 3, "max_depth": 2},
        xgboost.DMatrix(x, y, feature_names=["sl", "sw", "pl", "pw"]),
        num_boost_round=10,
    )
    path = tmp_path / f"iris{suffix}"
    booster.save_model(path)
    register_ok(registry, str(path), "--name", "iris", "--classes", "setosa,versicolor,virginica")
    rows = x[[0, 60, 120]]
    predictions, info = predict_rest(make_client, registry, "iris", rows.tolist())
    expected = booster.predict(xgboost.DMatrix(rows, feature_names=["sl", "sw", "pl", "pw"]))
    names = np.array(["setosa", "versicolor", "virginica"])
    assert [p["prediction"] for p in predictions] == names[expected.argmax(axis=1)].tolist()
    assert [p["prediction"] for p in predictions] == ["setosa", "versicolor", "virginica"]
    got = np.array([list(p["probabilities"].values()) for p in predictions])
    assert np.allclose(got, expected, atol=1e-6)
    assert info["framework"] == "xgboost"
    assert info["format"] == suffix[1:]
    assert info["classes"] == ["setosa", "versicolor", "virginica"]
    assert info["signature"]["feature_names"] == ["sl", "sw", "pl", "pw"]
    assert "xgboost" in info["libraries"] or "xgboost-cpu" in info["libraries"]


def test_xgboost_binary_and_regression(
    tmp_path: Path, registry: Registry, make_client: ClientFactory
) -> None:
    x, y = load_breast_cancer(return_X_y=True)
    binary = xgboost.train({"objective": "binary:logistic"}, xgboost.DMatrix(x, y), 5)
    binary.save_model(tmp_path / "cancer.json")
    register_ok(registry, str(tmp_path / "cancer.json"), "--name", "cancer")
    predictions, info = predict_rest(make_client, registry, "cancer", x[:2].tolist())
    p1 = binary.predict(xgboost.DMatrix(x[:2]))
    assert info["classes"] == [0, 1]  # the booster trained on 0/1: without --classes they stay
    assert [p["probabilities"]["1"] for p in predictions] == pytest.approx(p1.tolist(), abs=1e-6)
    assert [p["prediction"] for p in predictions] == (p1 > 0.5).astype(int).tolist()

    xr, yr = load_diabetes(return_X_y=True)
    regressor = xgboost.train({"objective": "reg:squarederror"}, xgboost.DMatrix(xr, yr), 5)
    regressor.save_model(tmp_path / "diabetes.ubj")
    register_ok(registry, str(tmp_path / "diabetes.ubj"), "--name", "diabetes")
    predictions, info = predict_rest(make_client, registry, "diabetes", xr[:3].tolist())
    expected = regressor.predict(xgboost.DMatrix(xr[:3]))
    assert [p["prediction"] for p in predictions] == pytest.approx(expected.tolist(), rel=1e-6)
    assert info["task"] == "regression"


def test_booster_hints_are_checked(tmp_path: Path, registry: Registry) -> None:
    x, y = load_iris(return_X_y=True)
    booster = xgboost.train(
        {"objective": "multi:softmax", "num_class": 3}, xgboost.DMatrix(x, y), 2
    )
    booster.save_model(tmp_path / "iris.json")
    wrong = berth(
        registry,
        "models",
        "register",
        str(tmp_path / "iris.json"),
        "--name",
        "x",
        "--classes",
        "a,b",
    )
    assert wrong.exit_code == 1
    assert "iris.json has 3 classes but 2 labels were given (a, b)" in flat(wrong)
    task = berth(
        registry,
        "models",
        "register",
        str(tmp_path / "iris.json"),
        "--name",
        "x",
        "--task",
        "regression",
    )
    assert "was trained for classification (multi:softmax), not regression" in flat(task)
    register_ok(registry, str(tmp_path / "iris.json"), "--name", "x")
    assert registry.card("x").has_probabilities is False  # softmax answers labels only


def test_lightgbm_boosters(tmp_path: Path, registry: Registry, make_client: ClientFactory) -> None:
    x, y = load_iris(return_X_y=True)
    classifier = lightgbm.train(
        {"objective": "multiclass", "num_class": 3, "verbose": -1, "min_data_in_leaf": 5},
        lightgbm.Dataset(x, y),
        num_boost_round=10,
    )
    classifier.save_model(tmp_path / "iris.txt")
    register_ok(
        registry,
        str(tmp_path / "iris.txt"),
        "--name",
        "iris",
        "--classes",
        "setosa,versicolor,virginica",
    )
    predictions, info = predict_rest(make_client, registry, "iris", x[[0, 60, 120]].tolist())
    expected = classifier.predict(x[[0, 60, 120]])
    assert [p["prediction"] for p in predictions] == ["setosa", "versicolor", "virginica"]
    got = np.array([list(p["probabilities"].values()) for p in predictions])
    assert np.allclose(got, expected, atol=1e-9)
    assert (info["framework"], info["task"], info["signature"]["n_features"]) == (
        "lightgbm",
        "classification",
        4,
    )
    assert info["signature"]["feature_names"] is None  # LightGBM's Column_0.. are not names

    data = load_diabetes(as_frame=True)
    regressor = lightgbm.train(
        {"objective": "regression", "verbose": -1}, lightgbm.Dataset(data.data, data.target), 5
    )
    regressor.save_model(tmp_path / "diabetes.txt")
    register_ok(registry, str(tmp_path / "diabetes.txt"), "--name", "diabetes")
    first = data.data.iloc[0]
    predictions, info = predict_rest(
        make_client, registry, "diabetes", [{k: float(v) for k, v in first.items()}]
    )
    assert predictions[0]["prediction"] == pytest.approx(
        float(regressor.predict(data.data.values[:1])[0])
    )
    assert info["signature"]["feature_names"] == list(data.data.columns)


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_sklearn_wrappers_load_through_the_sklearn_runtime(
    library: str, tmp_path: Path, registry: Registry, make_client: ClientFactory
) -> None:
    x, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])
    labels = names[y]
    if library == "xgboost":
        model = xgboost.XGBClassifier(n_estimators=10, max_depth=2).fit(x, y)
        expected = names[model.predict(x[[0, 60, 120]])].tolist()
        classes = [0, 1, 2]
    else:
        model = lightgbm.LGBMClassifier(n_estimators=10, verbose=-1).fit(x, labels)
        expected = model.predict(x[[0, 60, 120]]).tolist()
        classes = ["setosa", "versicolor", "virginica"]
    joblib.dump(model, tmp_path / "model.joblib")
    register_ok(registry, str(tmp_path / "model.joblib"), "--name", "wrapped")
    predictions, info = predict_rest(make_client, registry, "wrapped", x[[0, 60, 120]].tolist())
    got = [p["prediction"] for p in predictions]
    if library == "xgboost":
        got = names[got].tolist()
    assert got == expected == ["setosa", "versicolor", "virginica"]
    assert info["framework"] == "sklearn"
    assert info["classes"] == classes
    assert library in info["libraries"] or f"{library}-cpu" in info["libraries"]
