"""The TF-IDF + logistic regression predictor gives scikit-learn's own answers, bit for bit."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler
from sklearn.svm import LinearSVC
from sklearn.utils.extmath import softmax

from berth.dataplane import DataPlane
from berth.examples.datasets import intent_dataset
from berth.registry import Registry
from berth.runtimes import runtime_for_file, text_linear
from berth.runtimes.text_linear import text_linear_predictor
from berth.settings import Settings

TEXTS, LABELS = intent_dataset(n_per_class=150)
RNG = np.random.default_rng(3)


def _word_salad(n: int) -> list[str]:
    """Texts of known words in new orders, with unknown words, case and punctuation mixed in."""
    words = [*" ".join(TEXTS).split(), "qzxv", "HELLO!!", "refund?", "..."]
    return [" ".join(RNG.choice(words, size=RNG.integers(1, 25))) for _ in range(n)]


@pytest.mark.parametrize(
    "vectorizer",
    [
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),  # the examples' own
        TfidfVectorizer(),
        TfidfVectorizer(norm="l1", use_idf=False),
        TfidfVectorizer(norm=None, smooth_idf=False, binary=True, lowercase=False),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), max_features=300),
    ],
)
@pytest.mark.parametrize("binary", [False, True], ids=["4 classes", "2 classes"])
def test_probabilities_are_identical(vectorizer: Any, binary: bool) -> None:
    labels = [label if not binary or label == "complaint" else "other" for label in LABELS]
    estimator = make_pipeline(vectorizer, LogisticRegression(C=10.0, max_iter=2000))
    estimator.fit(TEXTS, labels)
    predict = text_linear_predictor(estimator)
    assert predict is not None
    for texts in (TEXTS, _word_salad(300), TEXTS[:1], ["qzxv"], [""]):
        assert np.array_equal(predict(texts), estimator.predict_proba(texts))


@pytest.mark.parametrize(
    "estimator",
    [
        make_pipeline(CountVectorizer(), LogisticRegression()),
        make_pipeline(TfidfVectorizer(), LinearSVC()),
        make_pipeline(TfidfVectorizer(), MaxAbsScaler(), LogisticRegression()),
    ],
    ids=["counts", "svm", "three steps"],
)
def test_other_pipelines_keep_scikit_learns_path(estimator: Any) -> None:
    assert text_linear_predictor(estimator.fit(TEXTS, LABELS)) is None


def test_a_predictor_that_disagrees_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    estimator = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(TEXTS, LABELS)
    assert text_linear_predictor(estimator) is not None
    off_by_one_ulp = lambda scores, copy: np.nextafter(softmax(scores, copy=copy), 1)  # noqa: E731
    monkeypatch.setattr(text_linear, "softmax", off_by_one_ulp)
    assert text_linear_predictor(estimator) is None


def test_served_text_model_answers_as_scikit_learn(tmp_path: Path) -> None:
    estimator = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(C=10.0)
    ).fit(TEXTS, LABELS)
    path = tmp_path / "intent.joblib"
    joblib.dump(estimator, path)
    registry = Registry(tmp_path / "registry")
    settings = Settings(registry=registry.root, refresh_interval_s=0)
    registry.register(
        "intent", [path], runtime_for_file(path).inspect(path, settings), alias="production"
    )
    texts = _word_salad(40)

    async def predict() -> Any:
        plane = DataPlane(registry, settings)
        await plane.start()
        try:
            return await plane.predict(None, None, {"instances": texts}, many=True)
        finally:
            await plane.stop()

    prediction = asyncio.run(predict())
    np.testing.assert_array_equal(prediction.outputs.probabilities, estimator.predict_proba(texts))
    assert prediction.outputs.labels == estimator.predict(texts).tolist()
