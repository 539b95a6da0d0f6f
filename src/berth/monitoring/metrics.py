"""Every Prometheus metric Berth exports, declared once, on a registry owned by one data plane.

With several worker processes, set `PROMETHEUS_MULTIPROC_DIR` to an empty folder shared by them
before they start (the runner does it for `--workers`); each worker then writes its samples there
and any worker's `/metrics` answers the sum over all of them (prometheus-client multiprocess mode).

Feeding the batching stage: call `metrics.batch_queue_wait.labels(model, version).observe(seconds)`
for each request when its batch starts, and `metrics.batch_size.labels(model, version).observe(rows)`
once per executed batch.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Final

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)

from berth.monitoring.buffered import flush, use_buffered_values

__all__ = [
    "CONTENT_TYPE_LATEST",
    "MULTIPROC_ENV",
    "Metrics",
    "mark_worker_dead",
    "observe_many",
    "prepare_multiprocess_dir",
]

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_POSITIVE = [m * 10.0**e for e in range(-2, 6) for m in (1.0, 2.5, 5.0)]
VALUE_BUCKETS = (*sorted(-v for v in _POSITIVE), 0.0, *_POSITIVE)
"""Regression outputs: a signed 1-2.5-5 series from 0.01 to 5e5 (the drift metrics, computed on the
reference's own quantile bins, are the precise view)."""

MAX_CLASS_LABELS = 100
"""More distinct class labels than this are counted under `class="other"`."""


def observe_many(histogram: Any, amounts: np.ndarray) -> None:
    """`histogram.observe(a)` for every `a` in `amounts`, with one write per bucket touched
    instead of two per value (each write costs a lock and, with several workers, an mmap store).

    `histogram` is one labelled child. prometheus-client has no bulk observe, so this adds to the
    child's bucket and sum values as its `observe` does (tests compare the two).
    """
    if amounts.size == 0:
        return
    bounds = histogram._upper_bounds
    # observe() counts a value in the first bucket whose bound it does not exceed; NaN in none
    first = np.searchsorted(bounds, amounts, side="left")
    counts = np.bincount(first, minlength=len(bounds) + 1)
    histogram._sum.inc(float(amounts.sum()))
    for i in np.flatnonzero(counts[: len(bounds)]).tolist():
        histogram._buckets[i].inc(int(counts[i]))


def multiprocess_dir() -> str | None:
    """The shared folder of multiprocess mode, when it is on in this process."""
    return os.environ.get(MULTIPROC_ENV) or None


def prepare_multiprocess_dir(path: Path) -> None:
    """Create (or empty) the shared folder and switch this process and its children to it.

    Call it in the parent before the first `Metrics` is built and before workers start (forked
    or spawned); an old folder is emptied, or it would add the previous run's counts to this one's.
    prometheus-client picks its value store when it is first imported; this re-picks it, so the
    call works even after `berth` (and so prometheus-client) was imported.
    """
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(path)
    use_buffered_values()


def mark_worker_dead(pid: int) -> None:
    """For a supervisor that reaped a worker: drop the dead worker's live gauges (in-flight
    requests, loaded flags, drift) from the shared folder. Its counters stay."""
    folder = multiprocess_dir()
    if folder is not None:
        multiprocess.mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]


class Metrics:
    """The metric families, bound to one `CollectorRegistry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.multiprocess = multiprocess_dir() is not None
        if self.multiprocess:  # also when the folder was set before this process started
            use_buffered_values(again=False)
        else:
            ProcessCollector(registry=self.registry)
        r = self.registry
        http = ["model", "version", "variant", "endpoint", "status_class"]
        self.requests = Counter(
            "berth_requests", "HTTP requests and unary gRPC calls answered.", http, registry=r
        )
        self.request_duration = Histogram(
            "berth_request_duration_seconds",
            "Time from the request's arrival to its response's first byte.",
            http,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "berth_requests_in_flight",
            "HTTP requests and unary gRPC calls being handled now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.stage_duration = Histogram(
            "berth_stage_duration_seconds",
            "Time spent per stage of a prediction: decode, predict, encode.",
            ["model", "version", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_queue_wait = Histogram(
            "berth_batch_queue_wait_seconds",
            "Time a request waited in the batching queue before its batch ran.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "berth_batch_size_rows",
            "Rows per batch handed to the model.",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "berth_predictions",
            "Prediction calls by outcome (ok or the error code).",
            ["model", "version", "outcome"],
            registry=r,
        )
        self.prediction_rows = Counter(
            "berth_prediction_rows",
            "Rows predicted (a batch request counts each of its instances).",
            ["model", "version"],
            registry=r,
        )
        self.predicted_class = Counter(
            "berth_predicted_class",
            "Predicted class labels of classification models.",
            ["model", "version", "class"],
            registry=r,
        )
        self.prediction_value = Histogram(
            "berth_prediction_value",
            "Predicted values of regression models.",
            ["model", "version"],
            buckets=VALUE_BUCKETS,
            registry=r,
        )
        self.model_loaded = Gauge(
            "berth_model_loaded",
            "1 when the version is loaded in every live worker, else 0.",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.model_load_duration = Histogram(
            "berth_model_load_duration_seconds",
            "Time to verify, load and warm up a model version.",
            ["model", "version"],
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.traffic_events = Counter(
            "berth_traffic_events",
            "Traffic changes and failures: switched, refresh_failed (a version that would not load "
            "or warm up; the old one kept serving), auto_rollback.",
            ["model", "event"],
            registry=r,
        )
        self.prediction_log_records = Counter(
            "berth_prediction_log_records",
            "Prediction-log records by outcome: written, spilled, replayed, dropped.",
            ["outcome"],
            registry=r,
        )
        self.prediction_log_buffered = Gauge(
            "berth_prediction_log_buffered_records",
            "Prediction-log records waiting in memory for the database.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.drift_psi = Gauge(
            "berth_drift_psi",
            "Population stability index of a feature (or `__prediction__`), live window vs reference.",
            ["model", "version", "feature"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.drift_ks = Gauge(
            "berth_drift_ks",
            "Kolmogorov-Smirnov statistic (on the reference bins), live window vs reference.",
            ["model", "version", "feature"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.drift_window_rows = Gauge(
            "berth_drift_window_rows",
            "Rows in the live window drift is computed on.",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livesum",
        )
        for outcome in ("written", "spilled", "replayed", "dropped"):
            self.prediction_log_records.labels(outcome)
        self._protection_metrics()

    def _protection_metrics(self) -> None:
        """Refusals of API keys, rate limits and the load guard (also at GET /admin/security)."""
        r = self.registry
        self.access_denied = Counter(
            "berth_access_denied",
            "Requests refused for their API key: unauthorized (none, unknown or revoked) or "
            "forbidden (the key's scope does not cover the call).",
            ["reason", "protocol"],
            registry=r,
        )
        self.rate_limited = Counter(
            "berth_rate_limited",
            "Requests refused by a rate limit, by bucket: key (a valid key) or address.",
            ["scope", "protocol"],
            registry=r,
        )
        self.rate_limit_storage_errors = Counter(
            "berth_rate_limit_storage_errors",
            "Requests whose rate limit could not be checked: the storage (Redis) was unreachable.",
            registry=r,
        )
        self.requests_shed = Counter(
            "berth_requests_shed",
            "HTTP requests answered 503 at once: BERTH_MAX_IN_FLIGHT requests were in flight.",
            registry=r,
        )
        self.request_timeouts = Counter(
            "berth_request_timeouts",
            "HTTP requests answered 504 after BERTH_REQUEST_TIMEOUT_S.",
            registry=r,
        )
        for protocol in ("http", "grpc"):
            for reason in ("unauthorized", "forbidden"):
                self.access_denied.labels(reason, protocol)
            for scope in ("key", "address"):
                self.rate_limited.labels(scope, protocol)

    def scrape_registry(self) -> CollectorRegistry:
        """The registry a scrape reads: every worker's samples merged in multiprocess mode."""
        if self.multiprocess:
            flush()  # this process's pending increments, so a scrape sees its own requests
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return merged
        return self.registry

    def render(self) -> bytes:
        """The exposition text of every metric (summed over workers in multiprocess mode)."""
        return generate_latest(self.scrape_registry())

    def samples(self, name: str) -> list[tuple[str, dict[str, str], float]]:
        """`(sample name, labels, value)` of one family, as a scrape would see them."""
        found: list[tuple[str, dict[str, str], float]] = []
        for family in self.scrape_registry().collect():
            if family.name == name:
                found.extend((s.name, dict(s.labels), s.value) for s in family.samples)
        return found

    def process_exited(self) -> None:
        """Drop this process's live gauges from the shared folder (graceful worker exit)."""
        flush()
        mark_worker_dead(os.getpid())
