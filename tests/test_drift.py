"""Drift: PSI and KS against the registered reference; shifted traffic alerts, unshifted does not."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from berth.monitoring.drift import DriftWindow, compare, ks_binned, live_fractions, psi
from berth.monitoring.reference import reference_statistics
from berth.registry import Registry
from berth.runtimes import Vocabulary
from berth.types import Outputs
from tests.conftest import ClientFactory
from tests.fakes import register_fake


def test_psi_and_ks_basics() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.4 * np.log(1.8) - 0.4 * np.log(0.2))
    assert ks_binned([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.4)
    # values beyond the reference range land in the outer bins
    edges = [0.0, 1.0, 2.0, 3.0]
    assert live_fractions(np.array([-5.0, 0.5, 2.5, 99.0]), edges) == [0.5, 0.0, 0.5]


def _reference(rng: np.random.Generator) -> dict[str, object]:
    rows = rng.normal(0.0, 1.0, size=(3000, 3))
    return reference_statistics(rows, Outputs(values=rows.sum(axis=1)), ["a", "b", "c"])


def test_compare_on_samples() -> None:
    rng = np.random.default_rng(7)
    reference = _reference(rng)
    same = rng.normal(0.0, 1.0, size=(1000, 3))
    shifted = same + np.array([1.0, 0.0, 0.0])
    calm = compare(reference, same, same.sum(axis=1))
    moved = compare(reference, shifted, shifted.sum(axis=1))
    assert calm["max_psi"] < 0.1
    assert moved["features"]["a"]["psi"] > 0.2
    assert moved["features"]["b"]["psi"] < 0.1
    assert moved["features"]["a"]["ks"] > 0.3
    assert moved["prediction"]["psi"] > 0.2


def test_drift_route_and_metrics(registry: Registry, make_client: ClientFactory) -> None:
    rng = np.random.default_rng(11)
    register_fake(registry, "adder", reference=_reference(rng))
    settings = {"drift_window": 600, "drift_min_rows": 200, "prediction_log": False}
    with make_client(registry, **settings) as client:
        early = client.get("/models/adder/drift").json()
        assert (early["status"], early["window_rows"]) == ("collecting", 0)
        for _ in range(6):
            rows = rng.normal(0.0, 1.0, size=(100, 3)).tolist()
            assert client.post("/predict/batch", json={"instances": rows}).status_code == 200
        calm = client.get("/models/adder/drift").json()
        for _ in range(6):  # the whole window now holds shifted traffic
            rows = (rng.normal(0.0, 1.0, size=(100, 3)) + np.array([1.5, 0.0, 0.0])).tolist()
            assert client.post("/predict/batch", json={"instances": rows}).status_code == 200
        moved = client.get("/models/adder/drift").json()
        metrics = client.get("/metrics").text
        unknown = client.get("/models/nope/drift")
    assert calm["status"] == "ok" and calm["window_rows"] == 600
    assert calm["max_psi"] < 0.1, calm["max_psi"]
    assert moved["features"]["a"]["psi"] > 0.2
    assert moved["features"]["b"]["psi"] < 0.1
    assert moved["prediction"]["psi"] > 0.2
    assert moved["max_psi"] > 0.2
    gauges = {
        s.labels["feature"]: s.value
        for f in text_string_to_metric_families(metrics)
        if f.name == "berth_drift_psi"
        for s in f.samples
    }
    assert gauges["a"] == pytest.approx(moved["features"]["a"]["psi"])
    assert gauges["__prediction__"] > 0.2
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "model_not_found"


def test_text_model_drift_on_lengths(
    examples_registry: Registry, make_client: ClientFactory
) -> None:
    with make_client(examples_registry, drift_min_rows=50, prediction_log=False) as client:
        long_text = "please " * 40 + "help me reset my password"
        for _ in range(60):
            client.post("/models/intent/predict", json={"text": long_text})
        report = client.get("/models/intent/drift").json()
    assert set(report["features"]) == {"text_chars", "text_words", "text_oov_rate"}
    assert report["features"]["text_chars"]["psi"] > 0.2
    assert report["features"]["text_oov_rate"]["live_mean"] > 0.8  # "please" is not in it
    assert report["prediction"]["ks"] is None  # classes have no order


KNOWN = ["I want to cancel my subscription", "Hi, How are you?", "Great service!"]
UNKNOWN = [
    "Zorgle blampf quintessa frobnicated the wibbly gronk",
    "Snarfle vortex kerplunk mimsy borogoves outgrabe",
    "Quixlet dravonian plumbus schleem grumbo fleeb",
]


def test_text_reference_records_the_oov_rate_of_the_vectorizer(
    examples_registry: Registry,
) -> None:
    oov = examples_registry.card("intent").reference["text"]["oov_rate"]
    assert oov["bin_edges"] == [i / 10 for i in range(11)]
    assert oov["count"] > 100
    assert oov["mean"] < 0.05  # held-out texts of the same templates: words the model knows


@pytest.mark.parametrize(("texts", "shifted"), [(KNOWN, False), (UNKNOWN, True)])
def test_unknown_words_raise_the_oov_rate(
    examples_registry: Registry, make_client: ClientFactory, texts: list[str], shifted: bool
) -> None:
    with make_client(examples_registry, drift_min_rows=60, prediction_log=False) as client:
        for i in range(60):
            response = client.post("/models/intent/predict", json={"text": texts[i % 3]})
            assert response.status_code == 200
        oov = client.get("/models/intent/drift").json()["features"]["text_oov_rate"]
        metrics = client.get("/metrics").text
    gauges = {
        s.labels["feature"]: s.value
        for f in text_string_to_metric_families(metrics)
        if f.name == "berth_drift_psi"
        for s in f.samples
        if s.labels["model"] == "intent"
    }
    assert gauges["text_oov_rate"] == pytest.approx(oov["psi"])
    if shifted:
        assert oov["psi"] > 0.2
        assert oov["live_mean"] > 0.5
        assert oov["live"][-1] > 0.5  # most texts: (nearly) every word unknown
    else:
        assert oov["psi"] < 0.1
        assert oov["live_mean"] == 0.0
        assert oov["live"][0] == 1.0


def test_a_failing_analyzer_leaves_the_other_text_features(examples_registry: Registry) -> None:
    def analyze(text: str) -> list[str]:
        raise ValueError("broken analyzer")

    card = examples_registry.card("intent")
    window = DriftWindow(card, 100, Vocabulary(analyze=analyze, terms=set()))
    window.add(KNOWN * 10, Outputs(labels=["complaint"] * 30))
    report = window.report()
    assert set(report["features"]) == {"text_chars", "text_words"}
    assert report["window_rows"] == 30
