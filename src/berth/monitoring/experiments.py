"""Per-variant evidence for routes: outcomes, latencies, predictions, shadow agreement, feedback.

Kept in memory per process: a sliding window (for automatic rollback) and running totals (for the
experiment report). Feedback joins on request ids remembered for the last `REMEMBERED` predictions.
"""

from __future__ import annotations

import math
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from berth.types import Label, Outputs

__all__ = ["ExperimentBook", "VariantStats", "two_proportion_z_test"]

REMEMBERED = 100_000
LATENCY_SAMPLES = 10_000
WINDOW_CAP = 5_000  # outcomes kept for auto-rollback judgements, however busy the window


@dataclass
class VariantStats:
    """Everything observed for one variant of one model's route."""

    window: deque[tuple[float, bool, float]] = field(
        default_factory=lambda: deque(maxlen=WINDOW_CAP)
    )
    requests: int = 0
    errors: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    labels: Counter[str] = field(default_factory=Counter)
    value_sum: float = 0.0
    values: int = 0
    shadow_compared: int = 0
    shadow_agreed: int = 0
    shadow_errors: int = 0
    shadow_latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    feedback: int = 0
    correct: int = 0
    abs_error_sum: float = 0.0

    def observe(self, ok: bool, latency_s: float, now: float, window_s: float) -> None:
        self.requests += 1
        self.errors += not ok
        self.latencies.append(latency_s)
        self.window.append((now, ok, latency_s))
        while self.window and self.window[0][0] < now - window_s:
            self.window.popleft()

    def window_summary(self, now: float, window_s: float) -> tuple[int, float, float]:
        """(requests, error rate, p99 latency) over the last `window_s` seconds."""
        recent = [(ok, lat) for t, ok, lat in self.window if t >= now - window_s]
        if not recent:
            return 0, 0.0, 0.0
        errors = sum(not ok for ok, _ in recent)
        return len(recent), errors / len(recent), _quantile([lat for _, lat in recent], 0.99)

    def report(self, task: str) -> dict[str, Any]:
        data: dict[str, Any] = {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.errors / self.requests if self.requests else 0.0,
            "latency_p50_ms": _quantile(list(self.latencies), 0.5) * 1000,
            "latency_p99_ms": _quantile(list(self.latencies), 0.99) * 1000,
        }
        if task == "classification":
            total = sum(self.labels.values())
            data["label_distribution"] = (
                {k: v / total for k, v in sorted(self.labels.items())} if total else {}
            )
        else:
            data["mean_prediction"] = self.value_sum / self.values if self.values else None
        if self.shadow_compared or self.shadow_errors:
            data["shadow"] = {
                "compared": self.shadow_compared,
                "agreement": self.shadow_agreed / self.shadow_compared
                if self.shadow_compared
                else None,
                "errors": self.shadow_errors,
                "latency_p50_ms": _quantile(list(self.shadow_latencies), 0.5) * 1000,
            }
        if self.feedback:
            key = "accuracy" if task == "classification" else "mae"
            value = (
                self.correct / self.feedback
                if key == "accuracy"
                else self.abs_error_sum / self.feedback
            )
            data["feedback"] = {"count": self.feedback, key: value}
        return data


def _quantile(values: list[float], q: float) -> float:
    return float(np.quantile(values, q)) if values else 0.0


def agree(primary: Outputs, shadow: Outputs) -> list[bool]:
    """Row by row: same label, or values within 1% of each other."""
    if primary.labels is not None and shadow.labels is not None:
        return [a == b for a, b in zip(primary.labels, shadow.labels, strict=True)]
    if primary.values is not None and shadow.values is not None:
        return [
            math.isclose(a, b, rel_tol=0.01, abs_tol=1e-9)
            for a, b in zip(primary.values.tolist(), shadow.values.tolist(), strict=True)
        ]
    return [False] * len(primary)


def two_proportion_z_test(hits_a: int, n_a: int, hits_b: int, n_b: int) -> tuple[float, float]:
    """(z, two-sided p-value) for the difference of two proportions."""
    if n_a == 0 or n_b == 0:
        return 0.0, 1.0
    pooled = (hits_a + hits_b) / (n_a + n_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if spread == 0:
        return 0.0, 1.0
    z = (hits_a / n_a - hits_b / n_b) / spread
    return z, math.erfc(abs(z) / math.sqrt(2))


class ExperimentBook:
    """Variant statistics of every served model, and the request ids feedback can refer to."""

    def __init__(self) -> None:
        self.variants: dict[str, dict[str, VariantStats]] = {}
        self._predictions: OrderedDict[str, tuple[str, str, Label | float]] = OrderedDict()

    def stats(self, model: str, variant: str) -> VariantStats:
        return self.variants.setdefault(model, {}).setdefault(variant, VariantStats())

    def record(
        self,
        model: str,
        variant: str,
        outputs: Outputs | None,
        ok: bool,
        latency_s: float,
        window_s: float,
        request_id: str,
    ) -> None:
        stats = self.stats(model, variant)
        stats.observe(ok, latency_s, time.monotonic(), window_s)
        if outputs is None:
            return
        if outputs.labels is not None:
            stats.labels.update(str(label) for label in outputs.labels)
            first: Label | float = outputs.labels[0]
        elif outputs.values is not None:
            stats.value_sum += float(outputs.values.sum())
            stats.values += len(outputs.values)
            first = float(outputs.values[0])
        else:
            return
        if request_id and len(outputs) == 1:
            self._predictions[request_id] = (model, variant, first)
            while len(self._predictions) > REMEMBERED:
                self._predictions.popitem(last=False)

    def feedback(self, request_id: str, truth: Label | float) -> tuple[str, str] | None:
        """Join ground truth to a remembered prediction; returns (model, variant) or None if unknown."""
        found = self._predictions.get(request_id)
        if found is None:
            return None
        model, variant, predicted = found
        stats = self.stats(model, variant)
        stats.feedback += 1
        if (
            isinstance(predicted, float)
            and isinstance(truth, int | float)
            and not isinstance(truth, bool)
        ):
            stats.abs_error_sum += abs(predicted - float(truth))
        else:
            stats.correct += str(predicted) == str(truth)
        return model, variant

    def report(self, model: str, task: str) -> dict[str, Any]:
        variants = self.variants.get(model, {})
        data: dict[str, Any] = {
            "variants": {name: s.report(task) for name, s in sorted(variants.items())}
        }
        judged = [(name, s) for name, s in variants.items() if s.feedback]
        if task == "classification" and len(judged) >= 2:
            (name_a, a), (name_b, b) = sorted(judged, key=lambda item: -item[1].feedback)[:2]
            z, p = two_proportion_z_test(a.correct, a.feedback, b.correct, b.feedback)
            data["comparison"] = {
                "variants": [name_a, name_b],
                "test": "two-proportion z-test on accuracy",
                "z": z,
                "p_value": p,
                "significant_at_0.05": p < 0.05,
            }
            if min(a.feedback, b.feedback) < 100:
                data["comparison"]["caveat"] = (
                    "fewer than 100 labelled predictions in a variant: the test has little power"
                )
        return data
