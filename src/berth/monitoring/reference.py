"""Reference statistics recorded at registration, the baseline for drift monitoring later.

Per numeric feature: mean, std, min, max and a 10-bin histogram on quantile edges; for text: the
same for text length in characters and words, and (when the model has a vocabulary) the
out-of-vocabulary rate per text on fixed tenths; for predictions: class frequencies or a histogram.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from berth.runtimes.base import Vocabulary
from berth.types import Outputs

__all__ = ["OOV_EDGES", "oov_rates", "reference_statistics"]

BINS = 10
OOV_EDGES = [i / BINS for i in range(BINS + 1)]
"""Fixed bins for the out-of-vocabulary rate: the reference is often all zeros (quantile edges
would collapse to one bin and hide any shift)."""


def _numeric(values: np.ndarray[Any, np.dtype[np.float64]]) -> dict[str, Any]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"count": 0}
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, BINS + 1)))
    if edges.size < 2:
        edges = np.array([values.min(), values.min() + 1.0])
    return _summary(values, edges)


def _summary(
    values: np.ndarray[Any, np.dtype[np.float64]], edges: np.ndarray[Any, np.dtype[np.float64]]
) -> dict[str, Any]:
    """Moments, range and the histogram over `edges` of finite, non-empty `values`."""
    counts, _ = np.histogram(values, bins=edges)
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "bin_edges": [float(e) for e in edges],
        "bin_fractions": [float(c) / values.size for c in counts],
    }


def oov_rates(
    texts: Sequence[str], vocabulary: Vocabulary
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Each text's share of terms the model does not know (NaN for texts without terms)."""
    return np.array([vocabulary.oov_rate(t) for t in texts], dtype=np.float64)


def _rates(values: np.ndarray[Any, np.dtype[np.float64]]) -> dict[str, Any]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"count": 0}
    return _summary(values, np.array(OOV_EDGES, dtype=np.float64))


def reference_statistics(
    rows: Sequence[str] | np.ndarray[Any, np.dtype[np.float64]],
    outputs: Outputs,
    feature_names: Sequence[str] | None = None,
    vocabulary: Vocabulary | None = None,
) -> dict[str, Any]:
    """Summarise reference inputs and the model's predictions on them (`vocabulary`: the text
    model's, from `Model.vocabulary()`, for the out-of-vocabulary rate)."""
    stats: dict[str, Any] = {"rows": len(rows)}
    if isinstance(rows, np.ndarray):
        names = list(feature_names or [f"f{i}" for i in range(rows.shape[1])])
        stats["features"] = {name: _numeric(rows[:, i]) for i, name in enumerate(names)}
    else:
        stats["text"] = {
            "chars": _numeric(np.array([len(t) for t in rows], dtype=np.float64)),
            "words": _numeric(np.array([len(t.split()) for t in rows], dtype=np.float64)),
        }
        if vocabulary is not None:
            stats["text"]["oov_rate"] = _rates(oov_rates(rows, vocabulary))
    if outputs.labels is not None:
        counts = Counter(str(label) for label in outputs.labels)
        stats["predictions"] = {
            "class_fractions": {k: v / len(rows) for k, v in sorted(counts.items())}
        }
    elif outputs.values is not None:
        stats["predictions"] = _numeric(np.asarray(outputs.values, dtype=np.float64))
    return stats
