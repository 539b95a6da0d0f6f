"""The scikit-learn runtime: formats, signature inference, loading policy, and the data plane around it."""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import sklearn
import skops.io
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from berth.dataplane import DataPlane
from berth.errors import ChecksumMismatch, InvalidInput, LibraryVersionMismatch, UnsafeModel
from berth.registry import Registry
from berth.runtimes import runtime_for_file
from berth.runtimes.sklearn import SklearnModel
from berth.settings import Settings


def _xy(n_features: int = 4) -> tuple[Any, Any]:
    return make_classification(
        n_samples=200,
        n_features=n_features,
        n_informative=min(3, n_features),
        n_redundant=0,
        random_state=0,
    )


def _save(estimator: Any, path: Path) -> Path:
    if path.suffix == ".skops":
        skops.io.dump(estimator, path)
    elif path.suffix in (".pkl", ".pickle"):
        path.write_bytes(pickle.dumps(estimator))
    else:
        joblib.dump(estimator, path)
    return path


def _register(registry: Registry, path: Path, name: str = "m", **kwargs: Any) -> Any:
    settings = Settings(registry=registry.root)
    card = runtime_for_file(path).inspect(path, settings, **kwargs)
    return registry.register(name, [path], card, alias="production")


def _predict(registry: Registry, body: Any, many: bool = False, **settings: Any) -> Any:
    plane = DataPlane(registry, Settings(registry=registry.root, refresh_interval_s=0, **settings))

    async def run() -> Any:
        try:
            await plane.start()
            return await plane.predict(None, None, body, many=many)
        finally:
            await plane.stop()

    return asyncio.run(run())


@pytest.mark.parametrize("suffix", [".joblib", ".pkl", ".skops"])
def test_formats_register_and_predict(registry: Registry, tmp_path: Path, suffix: str) -> None:
    x, y = _xy()
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    card = _register(registry, _save(model, tmp_path / f"model{suffix}"))
    assert card.format == {".joblib": "joblib", ".pkl": "pickle", ".skops": "skops"}[suffix]
    assert card.task == "classification"
    assert card.signature.kind == "tabular"
    assert card.signature.n_features == 4
    assert card.classes == [0, 1]
    assert card.has_probabilities
    assert card.libraries["scikit-learn"]
    prediction = _predict(registry, {"features": x[0].tolist()})
    assert prediction.outputs.labels == [int(model.predict(x[:1])[0])]
    np.testing.assert_allclose(prediction.outputs.probabilities, model.predict_proba(x[:1]))


def test_text_pipeline_is_detected(registry: Registry, tmp_path: Path) -> None:
    model = make_pipeline(CountVectorizer(), LogisticRegression()).fit(
        ["good day", "bad day", "good night", "bad night"], ["pos", "neg", "pos", "neg"]
    )
    card = _register(registry, _save(model, tmp_path / "m.joblib"))
    assert card.signature.kind == "text"
    assert card.classes == ["neg", "pos"]
    assert _predict(registry, {"text": "good"}).outputs.labels == ["pos"]


def test_dataframe_model_records_feature_names(registry: Registry, tmp_path: Path) -> None:
    x, y = _xy(3)
    frame = pd.DataFrame(x, columns=["age", "income", "score"])
    model = LogisticRegression().fit(frame, y)
    card = _register(registry, _save(model, tmp_path / "m.joblib"))
    assert card.signature.feature_names == ["age", "income", "score"]
    # named features arrive in any order; the model sees them as the DataFrame it was fitted on
    body = {"features": {"score": float(x[0, 2]), "age": float(x[0, 0]), "income": float(x[0, 1])}}
    prediction = _predict(registry, body)
    np.testing.assert_allclose(
        prediction.outputs.probabilities, model.predict_proba(frame.iloc[:1])
    )


def test_feature_names_given_at_registration(registry: Registry, tmp_path: Path) -> None:
    x, y = _xy(2)
    path = _save(LinearRegression().fit(x, y), tmp_path / "m.joblib")
    card = _register(registry, path, feature_names=["a", "b"])
    assert card.task == "regression"
    assert card.signature.feature_names == ["a", "b"]
    with pytest.raises(InvalidInput, match="takes 2 features but 3 names were given"):
        _register(registry, path, feature_names=["a", "b", "c"])


@pytest.mark.filterwarnings("ignore:The `probability` parameter was deprecated:FutureWarning")
def test_svc_labels_come_from_predict(registry: Registry, tmp_path: Path) -> None:
    x, y = _xy()
    model = SVC(probability=True, random_state=0).fit(x, y)
    _register(registry, _save(model, tmp_path / "m.joblib"))
    prediction = _predict(registry, {"instances": x[:50].tolist()}, many=True)
    assert prediction.outputs.labels == model.predict(x[:50]).tolist()


@pytest.mark.filterwarnings("ignore:The `probability` parameter was deprecated:FutureWarning")
@pytest.mark.parametrize(
    "build",
    [
        lambda: Pipeline(
            [("scale", StandardScaler()), ("skip", "passthrough"), ("clf", LogisticRegression())]
        ),
        lambda: make_pipeline(StandardScaler(), make_pipeline(PCA(3), LogisticRegression())),
        lambda: make_pipeline(StandardScaler(), SVC(probability=True, random_state=0)),
        lambda: make_pipeline(StandardScaler(), LinearRegression()),
    ],
    ids=["passthrough", "nested", "svc", "regressor"],
)
def test_pipelines_answer_what_scikit_learn_answers(
    registry: Registry, tmp_path: Path, build: Any
) -> None:
    """Berth calls a pipeline's steps itself (skipping Pipeline's per-call checks): the same
    probabilities, labels and values, bit for bit."""
    x, y = _xy()
    model = build().fit(x, y)
    _register(registry, _save(model, tmp_path / "m.joblib"))
    outputs = _predict(registry, {"instances": x[:50].tolist()}, many=True).outputs
    if outputs.values is not None:
        np.testing.assert_array_equal(outputs.values, model.predict(x[:50]))
        return
    assert outputs.labels == model.predict(x[:50]).tolist()
    np.testing.assert_array_equal(outputs.probabilities, model.predict_proba(x[:50]))


def test_classifier_without_probabilities(registry: Registry, tmp_path: Path) -> None:
    x, y = _xy()
    _register(registry, _save(SVC().fit(x, y), tmp_path / "m.joblib"))
    prediction = _predict(registry, {"features": x[0].tolist()})
    assert prediction.outputs.probabilities is None
    assert prediction.outputs.labels in ([0], [1])


def test_unsupported_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"cannot tell the format of model\.h5"):
        runtime_for_file(tmp_path / "model.h5")
    path = _save({"not": "a model"}, tmp_path / "m.joblib")
    with pytest.raises(InvalidInput, match="dict has no predict method"):
        SklearnModel.inspect(path, Settings())
    unfitted = _save(LogisticRegression(), tmp_path / "u.joblib")
    with pytest.raises(InvalidInput, match="is it fitted"):
        SklearnModel.inspect(unfitted, Settings())


class HomeMadeClassifier(ClassifierMixin, BaseEstimator):
    """An estimator from outside the trusted modules."""

    def fit(self, x: Any, y: Any) -> HomeMadeClassifier:
        self.classes_ = np.unique(y)
        self.n_features_in_ = np.asarray(x).shape[1]
        return self

    def predict(self, x: Any) -> Any:
        return np.full(len(x), self.classes_[0])


def test_skops_refuses_untrusted_types(tmp_path: Path) -> None:
    x, y = _xy()
    path = _save(HomeMadeClassifier().fit(x, y), tmp_path / "m.skops")
    with pytest.raises(UnsafeModel, match="HomeMadeClassifier"):
        SklearnModel.inspect(path, Settings())
    card = SklearnModel.inspect(path, Settings(trusted_modules=["sklearn", "numpy", "tests"]))
    assert card.classes == [0, 1]


def _older_minor() -> str:
    major, minor = (int(part) for part in sklearn.__version__.split(".")[:2])
    return f"{major}.{minor - 1 if minor else minor + 1}.0"


def _mark_old_sklearn(registry: Registry, version: str = "") -> None:
    card_path = registry.path("m", 1) / "model.json"
    data = json.loads(card_path.read_text())
    data["libraries"]["scikit-learn"] = version or _older_minor()
    card_path.write_text(json.dumps(data))


def test_library_version_mismatch_warns_or_refuses(
    registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    x, y = _xy()
    _register(registry, _save(LogisticRegression().fit(x, y), tmp_path / "m.joblib"))
    _mark_old_sklearn(registry)
    with caplog.at_level(logging.WARNING, logger="berth"):
        prediction = _predict(registry, {"features": x[0].tolist()})
    assert prediction.outputs.labels is not None
    assert f"registered with scikit-learn {_older_minor()}" in caplog.text
    with pytest.raises(LibraryVersionMismatch, match="BERTH_STRICT_LIBRARY_VERSIONS"):
        _predict(registry, {"features": x[0].tolist()}, strict_library_versions=True)
    _mark_old_sklearn(registry, "0.24.2")  # another major version: refused unless forced
    with pytest.raises(LibraryVersionMismatch, match="BERTH_FORCE_LIBRARY_VERSIONS"):
        _predict(registry, {"features": x[0].tolist()})
    assert _predict(registry, {"features": x[0].tolist()}, force_library_versions=True).outputs


def test_tampered_artifact_is_refused_at_load(registry: Registry, tmp_path: Path) -> None:
    x, y = _xy()
    _register(registry, _save(LogisticRegression().fit(x, y), tmp_path / "m.joblib"))
    artifact = registry.path("m", 1) / "m.joblib"
    joblib.dump(LogisticRegression().fit(x, 1 - y), artifact)
    with pytest.raises(ChecksumMismatch, match=r"m@1: sha256 of m\.joblib"):
        _predict(registry, {"features": x[0].tolist()})


def test_predict_skips_checks_the_codec_already_made(registry: Registry, tmp_path: Path) -> None:
    """scikit-learn's finiteness and parameter checks are off inside Berth's predict only (the
    codec refuses NaN first), and the answers are scikit-learn's own."""
    from berth.dataplane import load_version

    x, y = _xy()
    estimator = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    _register(registry, _save(estimator, tmp_path / "m.joblib"))
    entry = load_version(registry, Settings(registry=registry.root), "m", 1)
    seen: list[dict[str, Any]] = []
    loaded = entry.model.estimator.steps[-1][1]  # type: ignore[attr-defined]
    original = loaded.predict_proba

    def recording(rows: Any) -> Any:
        seen.append(sklearn.get_config())
        return original(rows)

    loaded.predict_proba = recording
    outputs = entry.model.predict(entry.codec.decode_rows(x[:5].tolist()))
    assert [(c["assume_finite"], c["skip_parameter_validation"]) for c in seen] == [(True, True)]
    assert sklearn.get_config()["assume_finite"] is False  # only inside the call
    np.testing.assert_array_equal(outputs.probabilities, estimator.predict_proba(x[:5]))
    with pytest.raises(InvalidInput, match="finite"):
        entry.codec.decode_rows([[float("nan"), 1.0, 2.0, 3.0]])
