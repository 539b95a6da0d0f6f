"""Per-model totals read back from the metrics, for the dashboard (rates are taken by the page)."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any

from berth.monitoring.metrics import Metrics

__all__ = ["model_totals", "quantile"]


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The q-quantile from cumulative `(upper bound, count)` buckets, interpolated like PromQL."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            if cumulative == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (cumulative - below)
        lower, below = bound, cumulative
    return lower


def model_totals(metrics: Metrics) -> dict[str, Any]:
    """Cumulative requests, errors and latency buckets per model, and the time they were read."""
    per_model: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "requests": 0.0,
            "errors": 0.0,
            "client_errors": 0.0,
            "buckets": defaultdict(float),
        }
    )
    for name, labels, value in metrics.samples("berth_requests"):
        model = labels.get("model", "")
        if not name.endswith("_total") or not model:
            continue
        entry = per_model[model]
        entry["requests"] += value
        if labels.get("status_class") == "5xx":
            entry["errors"] += value
        elif labels.get("status_class") == "4xx":
            entry["client_errors"] += value
    for name, labels, value in metrics.samples("berth_request_duration_seconds"):
        model = labels.get("model", "")
        if name.endswith("_bucket") and model:
            per_model[model]["buckets"][float(labels["le"])] += value
    models = {}
    for model, entry in per_model.items():
        buckets = sorted(entry.pop("buckets").items())
        entry["latency_buckets"] = [[b if math.isfinite(b) else "+Inf", c] for b, c in buckets]
        entry["p50_s"] = quantile(0.5, buckets)
        entry["p99_s"] = quantile(0.99, buckets)
        models[model] = entry
    return {"time": time.time(), "models": models}
