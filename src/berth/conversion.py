"""Convert a registered scikit-learn version to ONNX, check parity on sample inputs, time both.

The converted graph becomes a new version of the same model only if it agrees with the original:
labels equal on every sample row and probabilities (or regression values) within a tolerance. The
parity and speed figures are recorded in the new version's metrics.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from berth.errors import InvalidInput, MissingExtra
from berth.registry import Registry
from berth.runtimes import Batch, Hints, Model, runtime_for
from berth.settings import Settings
from berth.types import ModelCard, Outputs

__all__ = ["Conversion", "Parity", "Speed", "convert_to_onnx", "parity", "sample_inputs", "speed"]

SAMPLE_ROWS = 200


@dataclass(frozen=True, slots=True)
class Parity:
    """How closely the converted model reproduces the original on the sample rows."""

    rows: int
    labels_equal: int
    max_abs_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.labels_equal == self.rows and self.max_abs_diff <= self.tolerance


@dataclass(frozen=True, slots=True)
class Speed:
    """Median latency of one model on a single row and on the whole sample batch."""

    single_row_ms: float
    batch_ms: float
    batch_rows: int

    @property
    def rows_per_s(self) -> float:
        return self.batch_rows / (self.batch_ms / 1000) if self.batch_ms else float("inf")


@dataclass(frozen=True, slots=True)
class Conversion:
    """The outcome of `convert_to_onnx`: the new card (None when parity failed) and the figures."""

    card: ModelCard | None
    source: ModelCard
    parity: Parity
    source_speed: Speed
    converted_speed: Speed


def parity(expected: Outputs, actual: Outputs, tolerance: float) -> Parity:
    """Compare two models' outputs on the same rows.

    Probabilities are compared as absolute differences, regression values relative to their size
    (below 1, absolute): float32 graphs keep about seven significant digits.
    """
    rows = len(expected)
    if expected.values is not None and actual.values is not None:
        scale = np.maximum(np.abs(expected.values), 1.0)
        diff = float(np.max(np.abs(expected.values - actual.values) / scale, initial=0.0))
        return Parity(rows, rows, diff, tolerance)
    equal = sum(
        1 for a, b in zip(expected.labels or [], actual.labels or [], strict=True) if a == b
    )
    diff = 0.0
    if expected.probabilities is not None and actual.probabilities is not None:
        diff = float(np.max(np.abs(expected.probabilities - actual.probabilities), initial=0.0))
    return Parity(rows, equal, diff, tolerance)


def speed(model: Model, batch: Batch, single_runs: int = 100, batch_runs: int = 5) -> Speed:
    """Median wall time of `predict` on one row (`single_runs` times) and on `batch`."""
    one = batch[:1]
    model.predict(one)  # warm up lazy initialisation
    singles = []
    for _ in range(single_runs):
        started = time.perf_counter()
        model.predict(one)
        singles.append(time.perf_counter() - started)
    batches = []
    for _ in range(batch_runs):
        started = time.perf_counter()
        model.predict(batch)
        batches.append(time.perf_counter() - started)
    return Speed(
        round(statistics.median(singles) * 1000, 4),
        round(statistics.median(batches) * 1000, 3),
        len(batch),
    )


def sample_inputs(card: ModelCard, estimator: Any, rows: int = SAMPLE_ROWS) -> Batch:
    """Rows to compare on: the input example plus rows drawn from the reference statistics.

    Tabular rows are drawn per feature from the reference histogram (or around the input example
    when the version has no reference); text rows are random phrases from the vectorizer's
    vocabulary, which exercises the tokenizer more than the few recorded examples would.
    """
    rng = np.random.default_rng(0)
    if card.signature.kind == "text":
        texts = [card.input_example["text"]] if isinstance(card.input_example, dict) else []
        step = estimator
        while hasattr(step, "steps"):
            step = step.steps[0][1]
        vocabulary = sorted(getattr(step, "vocabulary_", {}) or {})
        words = [w for w in vocabulary if " " not in w] or ["hello", "world"]
        for _ in range(rows):
            picked = rng.choice(words, size=int(rng.integers(2, 12)))
            texts.append(" ".join(picked).capitalize() + str(rng.choice([".", "?", "!", ""])))
        return texts
    n = card.signature.n_features or 0
    features = ((card.reference or {}).get("features")) or {}
    names = card.signature.feature_names or [f"f{i}" for i in range(n)]
    columns = []
    for i, name in enumerate(names):
        stats = features.get(name)
        if stats and stats.get("bin_edges"):
            edges = np.asarray(stats["bin_edges"], dtype=np.float64)
            fractions = np.asarray(stats["bin_fractions"], dtype=np.float64)
            bins = rng.choice(len(fractions), size=rows, p=fractions / fractions.sum())
            columns.append(rng.uniform(edges[bins], edges[bins + 1]))
        else:
            center = _example_row(card, n)[i]
            columns.append(center + rng.normal(0.0, abs(center) * 0.1 + 0.1, size=rows))
    matrix = np.column_stack(columns) if columns else np.empty((rows, 0))
    return np.vstack([_example_row(card, n), matrix]).astype(np.float64)


def _example_row(card: ModelCard, n: int) -> list[float]:
    example = card.input_example
    features = example.get("features") if isinstance(example, dict) else None
    if isinstance(features, dict) and card.signature.feature_names:
        return [float(features[name]) for name in card.signature.feature_names]
    if isinstance(features, list) and len(features) == n:
        return [float(v) for v in features]
    return [0.0] * n


def _to_onnx(estimator: Any, card: ModelCard) -> Any:
    try:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import (
            DoubleTensorType,
            FloatTensorType,
            StringTensorType,
        )
    except ImportError as exc:
        raise MissingExtra(
            f"converting to ONNX needs {exc.name}: pip install 'berth[onnx]'"
        ) from exc
    options: dict[int, dict[str, Any]] = {}
    step = estimator
    while hasattr(step, "steps"):
        for _, part in step.steps:
            if hasattr(part, "build_analyzer"):
                options[id(part)] = {"locale": "C"}  # the machine's locale may not exist elsewhere
        step = step.steps[-1][1]
    if card.task == "classification":
        options[id(step)] = {"zipmap": False}
    if card.signature.kind == "text":
        attempts = [StringTensorType([None, 1])]
    else:
        # double first: trees compare thresholds in the input's precision, float32 can flip labels
        attempts = [
            DoubleTensorType([None, card.signature.n_features]),
            FloatTensorType([None, card.signature.n_features]),
        ]
    runtime_for("onnx")  # onnxruntime must be installed too (MissingExtra otherwise)
    import onnxruntime

    errors = []
    for tensor_type in attempts:
        try:
            graph = to_onnx(estimator, initial_types=[("input", tensor_type)], options=options)
            # skl2onnx can emit graphs onnxruntime refuses (double trees in some regressors)
            onnxruntime.InferenceSession(
                graph.SerializeToString(), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            errors.append(f"{type(tensor_type).__name__}: {exc}")
            continue
        return graph
    raise InvalidInput(
        f"skl2onnx cannot convert {card.ref} ({card.description or 'this estimator'}): "
        + "; ".join(errors)
    )


def convert_to_onnx(
    registry: Registry,
    name: str,
    version: str | None,
    settings: Settings,
    *,
    samples: Batch | None = None,
    tolerance: float = 1e-4,
    alias: str | None = None,
    register_on_mismatch: bool = False,
) -> Conversion:
    """Convert NAME@VERSION to ONNX; register it as a new version when parity holds."""
    source_card = registry.card(name, version)
    if source_card.framework != "sklearn":
        raise InvalidInput(
            f"{source_card.ref} is a {source_card.framework} model: only scikit-learn models "
            "convert to ONNX"
        )
    registry.verify(source_card)
    source = runtime_for("sklearn")(source_card, registry.path(name, source_card.version), settings)
    source.load()
    estimator = source.estimator  # type: ignore[attr-defined]
    batch = samples if samples is not None else sample_inputs(source_card, estimator)
    graph = _to_onnx(estimator, source_card)
    meta = graph.metadata_props.add()
    meta.key, meta.value = "berth.converted_from", source_card.ref
    if source_card.classes is not None:
        meta = graph.metadata_props.add()
        meta.key, meta.value = "berth.classes", json.dumps(source_card.classes)
    onnx_runtime = runtime_for("onnx")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(graph.SerializeToString())
        card = onnx_runtime.inspect(
            path,
            settings,
            feature_names=source_card.signature.feature_names,
            hints=Hints(task=source_card.task, classes=source_card.classes),
        )
        converted = onnx_runtime(card, Path(tmp), settings)
        converted.load()
        result = parity(source.predict(batch), converted.predict(batch), tolerance)
        source_speed = speed(source, batch)
        converted_speed = speed(converted, batch)
        if not result.passed and not register_on_mismatch:
            return Conversion(None, source_card, result, source_speed, converted_speed)
        card = card.model_copy(
            update={
                "description": f"ONNX conversion of {source_card.ref}: {source_card.description}",
                "input_example": source_card.input_example,
                "reference": source_card.reference,
                "tags": {**source_card.tags, "converted_from": source_card.ref},
                "metrics": {
                    **source_card.metrics,
                    "parity_rows": float(result.rows),
                    "parity_labels_equal": float(result.labels_equal),
                    "parity_max_diff": result.max_abs_diff,
                    "parity_tolerance": tolerance,
                    "speed_single_row_ms_source": source_speed.single_row_ms,
                    "speed_single_row_ms_onnx": converted_speed.single_row_ms,
                    "speed_rows_per_s_source": round(source_speed.rows_per_s, 1),
                    "speed_rows_per_s_onnx": round(converted_speed.rows_per_s, 1),
                },
            }
        )
        stored = registry.register(name, [path], card, alias=alias)
    return Conversion(stored, source_card, result, source_speed, converted_speed)
