"""Drift: live traffic against the reference statistics recorded at registration (PSI and KS).

Numeric features (and, for text models, text length in characters and words) are binned on the
reference's own quantile edges; values outside the reference range fall into the outer bins, so a
shift past the range shows. A text model whose reference has an out-of-vocabulary rate (the share
of a text's words its vectorizer does not know) is compared on fixed tenths of that rate. PSI = sum((live - ref) * ln(live / ref)) over bins, with fractions
floored at 1e-4; KS is the largest gap between the two cumulative distributions at the bin edges
(a binned KS: the registry keeps bins, not raw samples). Class predictions get PSI over class
frequencies; KS is not defined for unordered classes and is reported as null.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from berth.monitoring.reference import oov_rates
from berth.runtimes.base import Batch, Vocabulary
from berth.types import ModelCard, Outputs

__all__ = [
    "OOV_COLUMN",
    "PREDICTION",
    "DriftWindow",
    "compare",
    "ks_binned",
    "live_fractions",
    "psi",
]

log = logging.getLogger("berth.monitoring")

PREDICTION = "__prediction__"
OOV_COLUMN = "text_oov_rate"
_MAX_KEPT_CHARS = 10_000
"""A text longer than this is kept for the out-of-vocabulary rate by its first characters only."""
PSI_ALERT = 0.2
_FLOOR = 1e-4

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


def psi(reference: Sequence[float], live: Sequence[float]) -> float:
    """Population stability index of two distributions over the same bins."""
    ref = np.clip(np.asarray(reference, dtype=np.float64), _FLOOR, None)
    now = np.clip(np.asarray(live, dtype=np.float64), _FLOOR, None)
    return float(np.sum((now - ref) * np.log(now / ref)))


def ks_binned(reference: Sequence[float], live: Sequence[float]) -> float:
    """Largest gap between the cumulative distributions, evaluated at the bin edges."""
    gap = np.cumsum(np.asarray(live, dtype=np.float64)) - np.cumsum(
        np.asarray(reference, dtype=np.float64)
    )
    return float(np.max(np.abs(gap))) if gap.size else 0.0


def live_fractions(values: FloatArray, edges: Sequence[float]) -> list[float]:
    """Fractions of `values` per bin of `edges`; values beyond the range count in the outer bins."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return [0.0] * (len(edges) - 1)
    inner = np.asarray(edges[1:-1], dtype=np.float64)
    index = np.searchsorted(inner, values, side="right")
    counts = np.bincount(index, minlength=len(edges) - 1)
    return [float(c) / values.size for c in counts]


def _numeric_report(stats: dict[str, Any], values: FloatArray) -> dict[str, Any] | None:
    edges = stats.get("bin_edges")
    if not edges or len(edges) < 2:
        return None
    reference = stats["bin_fractions"]
    live = live_fractions(values, edges)
    finite = values[np.isfinite(values)]
    if finite.size == 0:  # nothing measured (e.g. no vocabulary to count unknown words with)
        return None
    return {
        "psi": psi(reference, live),
        "ks": ks_binned(reference, live),
        "bin_edges": edges,
        "reference": reference,
        "live": live,
        "reference_mean": stats.get("mean"),
        "live_mean": float(finite.mean()) if finite.size else None,
    }


def _class_report(reference: dict[str, float], labels: Sequence[str]) -> dict[str, Any]:
    classes = sorted(set(reference) | set(labels))
    counts = {c: 0 for c in classes}
    for label in labels:
        counts[label] += 1
    total = max(len(labels), 1)
    ref = [reference.get(c, 0.0) for c in classes]
    live = [counts[c] / total for c in classes]
    return {"psi": psi(ref, live), "ks": None, "classes": classes, "reference": ref, "live": live}


def feature_columns(reference: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Name -> reference stats of every monitored input column, in the order rows carry them."""
    if "features" in reference:
        return dict(reference["features"])
    text = reference.get("text", {})
    return {f"text_{key}": stats for key, stats in text.items()}


def input_columns(batch: Batch, vocabulary: Vocabulary | None = None) -> FloatArray:
    """A batch as numeric columns: the features, or text length in characters and in words (and
    the out-of-vocabulary rate, given the model's vocabulary)."""
    if isinstance(batch, np.ndarray):
        return batch
    lengths = np.array([[len(t), len(t.split())] for t in batch], dtype=np.float64).reshape(-1, 2)
    if vocabulary is None:
        return lengths
    return np.column_stack([lengths, oov_rates(batch, vocabulary)])


def compare(
    reference: dict[str, Any], inputs: FloatArray, predictions: Sequence[Any] | FloatArray
) -> dict[str, Any]:
    """PSI and KS per monitored column and for the predictions; `max_psi` over all of them."""
    features: dict[str, Any] = {}
    for i, (name, stats) in enumerate(feature_columns(reference).items()):
        if inputs.ndim == 2 and i < inputs.shape[1]:
            report = _numeric_report(stats, inputs[:, i])
            if report is not None:
                features[name] = report
    prediction: dict[str, Any] | None = None
    ref_predictions = reference.get("predictions", {})
    if "class_fractions" in ref_predictions:
        prediction = _class_report(
            ref_predictions["class_fractions"], [str(p) for p in predictions]
        )
    elif "bin_edges" in ref_predictions:
        prediction = _numeric_report(ref_predictions, np.asarray(predictions, dtype=np.float64))
    scores = [f["psi"] for f in features.values()]
    if prediction is not None:
        scores.append(prediction["psi"])
    return {
        "features": features,
        "prediction": prediction,
        "max_psi": max(scores) if scores else None,
        "alert_threshold": PSI_ALERT,
    }


class DriftWindow:
    """The last `size` rows one model version saw (inputs as numeric columns, and predictions).

    A text model's out-of-vocabulary rate costs an analyzer pass per text, so the window keeps the
    texts and computes their rates when a report is asked for (off the request path).
    """

    def __init__(self, card: ModelCard, size: int, vocabulary: Vocabulary | None = None) -> None:
        assert card.reference is not None
        self.card = card
        self.reference: dict[str, Any] = card.reference
        self.size = size
        names = list(feature_columns(self.reference))
        self.columns = len([n for n in names if n != OOV_COLUMN])
        self.vocabulary = vocabulary if OOV_COLUMN in names else None
        self._inputs = np.zeros((size, self.columns), dtype=np.float64)
        self._predictions: deque[Any] = deque(maxlen=size)
        self._unrated: deque[str] = deque(maxlen=size)  # texts whose OOV rate is not computed yet
        self._oov: deque[float] = deque(maxlen=size)
        self._next = 0
        self._filled = 0
        self._lock = threading.Lock()
        self._report_lock = threading.Lock()

    def add(self, batch: Batch, outputs: Outputs) -> None:
        columns = input_columns(batch)
        if columns.ndim != 2 or columns.shape[1] != self.columns:
            return
        columns = columns[-self.size :]
        n = columns.shape[0]
        with self._lock:
            end = self._next + n
            if end <= self.size:
                self._inputs[self._next : end] = columns
            else:
                split = self.size - self._next
                self._inputs[self._next :] = columns[:split]
                self._inputs[: n - split] = columns[split:]
            self._next = end % self.size
            self._filled = min(self.size, self._filled + n)
            values = outputs.values if outputs.values is not None else outputs.labels or []
            tail = values[-self.size :]  # Python values: iterating an array makes NumPy scalars
            self._predictions.extend(tail.tolist() if isinstance(tail, np.ndarray) else tail)
            if self.vocabulary is not None and isinstance(batch, list):
                self._unrated.extend(t[:_MAX_KEPT_CHARS] for t in batch[-self.size :])

    @property
    def rows(self) -> int:
        return self._filled

    def report(self) -> dict[str, Any]:
        with self._report_lock:
            with self._lock:
                inputs = self._inputs[: self._filled].copy()
                predictions = list(self._predictions)
                unrated = list(self._unrated)
                self._unrated.clear()
            if self.vocabulary is not None:
                try:
                    self._oov.extend(oov_rates(unrated, self.vocabulary).tolist())
                except Exception:  # the model's own analyzer failed: report drift without it
                    log.exception("out-of-vocabulary rate failed", extra={"model": self.card.ref})
                    self.vocabulary = None
                rates = np.fromiter(self._oov, dtype=np.float64)[-len(inputs) :]
                if self.vocabulary is not None and len(rates) == len(inputs):
                    inputs = np.column_stack([inputs, rates])
        return {"window_rows": len(inputs), **compare(self.reference, inputs, predictions)}
