"""What the data plane calls after each load and prediction: metrics, prediction log, drift window
(and, when tracing is on, the tracer provider's life)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter as Tally
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from berth.monitoring.context import RequestRecord, current_request
from berth.monitoring.drift import PREDICTION, DriftWindow
from berth.monitoring.metrics import MAX_CLASS_LABELS, Metrics, observe_many
from berth.monitoring.predlog import PredictionLog
from berth.runtimes.base import Batch, Vocabulary
from berth.settings import Settings
from berth.types import ModelCard, Outputs

if TYPE_CHECKING:  # imported only when tracing is on (it loads opentelemetry)
    from berth.monitoring.tracing import Tracing

__all__ = ["Monitor", "state_dir"]

log = logging.getLogger("berth.monitoring")


def state_dir(settings: Settings) -> Path:
    """Where local state lives: the setting, else `.berth` beside the registry folder."""
    if settings.state_dir is not None:
        return settings.state_dir
    return Path(settings.registry).parent / ".berth"


@dataclass(slots=True)
class _Series:
    """The metric children of one model version, resolved once (`labels()` costs a lock and a
    dict lookup per call; a prediction touches five of them)."""

    decode: Any
    predict: Any
    ok: Any
    rows: Any
    values: Any
    classes: dict[str, Any] = field(default_factory=dict)


class Monitor:
    """Owns the metrics of one data plane, its prediction log and its drift windows."""

    def __init__(
        self, settings: Settings, metrics: Metrics | None = None, tracing: Tracing | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.tracing = tracing
        """Spans of requests; None while `settings.tracing` is off (and no opentelemetry import)."""
        if tracing is None and settings.tracing != "off":
            from berth.monitoring.tracing import Tracing

            self.tracing = Tracing(settings.tracing)
        self.prediction_log: PredictionLog | None = None
        if settings.prediction_log:
            self.prediction_log = PredictionLog(settings, state_dir(settings), self.metrics)
        self.windows: dict[tuple[str, int], DriftWindow] = {}
        self._series: dict[tuple[str, int], _Series] = {}
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if (
            self.tracing is not None
        ):  # here, in each worker after fork: exporter threads die in fork
            self.tracing.start()
        if self.prediction_log is not None:
            await asyncio.to_thread(self.prediction_log.start)
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_drift())

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self.prediction_log is not None:
            await asyncio.to_thread(self.prediction_log.close)
        if self.tracing is not None:  # sends the spans still waiting
            await asyncio.to_thread(self.tracing.shutdown)
        self.metrics.process_exited()

    # -- events from the data plane ---------------------------------------------------------

    def loaded(
        self, card: ModelCard, seconds: float | None = None, vocabulary: Vocabulary | None = None
    ) -> None:
        """A version is loaded (`seconds`: how long it took, when this process loaded it;
        `vocabulary`: a text model's, for the out-of-vocabulary rate)."""
        version = str(card.version)
        if seconds is not None:
            self.metrics.model_load_duration.labels(card.name, version).observe(seconds)
        self.metrics.model_loaded.labels(card.name, version).set(1)
        if card.reference and (card.name, card.version) not in self.windows:
            self.windows[(card.name, card.version)] = DriftWindow(
                card, self.settings.drift_window, vocabulary
            )

    def expecting(self, card: ModelCard) -> None:
        """A version this process is about to load: not loaded (0) until `loaded`."""
        self.metrics.model_loaded.labels(card.name, str(card.version)).set(0)

    def unloaded(self, card: ModelCard) -> None:
        """A version left the traffic (retired or unloaded on purpose): its series go away.

        (In multiprocess mode prometheus-client cannot remove a series from the shared files;
        there the last value stays until the worker exits.)
        """
        key = (card.name, card.version)
        self.windows.pop(key, None)
        self._series.pop(key, None)
        labels = (card.name, str(card.version))
        for family in (self.metrics.model_loaded, self.metrics.drift_window_rows):
            with contextlib.suppress(KeyError):
                family.remove(*labels)

    def _series_of(self, card: ModelCard) -> _Series:
        key = (card.name, card.version)
        series = self._series.get(key)
        if series is None:
            m, version = self.metrics, str(card.version)
            series = _Series(
                decode=m.stage_duration.labels(card.name, version, "decode"),
                predict=m.stage_duration.labels(card.name, version, "predict"),
                ok=m.predictions.labels(card.name, version, "ok"),
                rows=m.prediction_rows.labels(card.name, version),
                values=m.prediction_value.labels(card.name, version),
            )
            self._series[key] = series
        return series

    def _class_counter(self, card: ModelCard, series: _Series, label: str) -> Any:
        counter = series.classes.get(label)
        if counter is None:
            known = {str(c) for c in (card.classes or [])[:MAX_CLASS_LABELS]}
            shown = label if label in known else "other"
            counter = self.metrics.predicted_class.labels(card.name, str(card.version), shown)
            series.classes[label] = counter
        return counter

    def predicted(
        self,
        card: ModelCard,
        request_id: str,
        batch: Batch,
        outputs: Outputs,
        started: float,
        decoded: float,
        variant: str | None = None,
    ) -> None:
        """A successful prediction request: `started`/`decoded` are `perf_counter()` readings;
        `variant` is the route's arm that served it (None without a route). Its rows were
        counted by `batch_predicted`, with the rest of the model call that answered them."""
        now = time.perf_counter()
        series = self._series_of(card)
        series.decode.observe(decoded - started)
        series.ok.inc()
        record = current_request.get()
        if record is not None:
            self._note(record, card, variant, request_id, "ok")
            record.started, record.decoded, record.predicted_at = started, decoded, now
        self._record(card, request_id, "ok", now - started, batch, outputs, variant)

    def batch_predicted(
        self, card: ModelCard, batch: Batch, outputs: Outputs, seconds: float
    ) -> None:
        """One call of the model (a merged batch, or one request's rows when not batched; shadow
        calls too) took `seconds`: the predict stage, rows, predicted classes or values, and the
        drift window. Once per call rather than per request, in the thread that ran the model."""
        series = self._series_of(card)
        series.predict.observe(seconds)
        series.rows.inc(len(outputs))
        if outputs.values is not None:
            if len(outputs.values) == 1:
                series.values.observe(float(outputs.values[0]))
            else:
                observe_many(series.values, np.asarray(outputs.values, dtype=np.float64).ravel())
        elif outputs.labels is not None:
            for label, n in Tally(str(x) for x in outputs.labels).items():
                self._class_counter(card, series, label).inc(n)
        window = self.windows.get((card.name, card.version))
        if window is not None:
            window.add(batch, outputs)

    def failed(
        self,
        card: ModelCard,
        request_id: str,
        code: str,
        started: float,
        variant: str | None = None,
    ) -> None:
        now = time.perf_counter()
        self.metrics.predictions.labels(card.name, str(card.version), code).inc()
        record = current_request.get()
        if record is not None:
            self._note(record, card, variant, request_id, code)
            record.started, record.predicted_at = started, 0.0
        self._record(card, request_id, code, now - started, None, None, variant)

    @staticmethod
    def _note(
        record: RequestRecord, card: ModelCard, variant: str | None, request_id: str, outcome: str
    ) -> None:
        record.model, record.version = card.name, str(card.version)
        record.variant = variant or ""
        record.request_id, record.outcome = request_id, outcome

    def _record(
        self,
        card: ModelCard,
        request_id: str,
        outcome: str,
        seconds: float,
        batch: Batch | None,
        outputs: Outputs | None,
        variant: str | None,
    ) -> None:
        plog = self.prediction_log
        if plog is not None and plog.running and plog.sampled():
            plog.submit(
                request_id=request_id,
                model=card.name,
                version=card.version,
                outcome=outcome,
                latency_ms=round(seconds * 1000, 3),
                batch=batch,
                outputs=outputs,
                variant=variant,
            )

    def feedback(self, request_id: str, truth: Any) -> bool:
        """Store the ground truth of an earlier request; False when the prediction log is off."""
        plog = self.prediction_log
        if plog is None or not plog.running:
            return False
        plog.submit_feedback(request_id, truth)
        return True

    # -- drift ------------------------------------------------------------------------------

    def drift(self, card: ModelCard) -> dict[str, Any]:
        """The drift report of a version's live window (and the metrics updated from it)."""
        window = self.windows.get((card.name, card.version))
        base: dict[str, Any] = {
            "model": card.name,
            "version": card.version,
            "min_rows": self.settings.drift_min_rows,
        }
        if window is None:
            reason = "no reference statistics" if not card.reference else "version not loaded"
            return {**base, "status": reason, "window_rows": 0, "features": {}}
        report = window.report()
        if report["window_rows"] < self.settings.drift_min_rows:
            return {
                **base,
                "status": "collecting",
                "window_rows": report["window_rows"],
                "features": {},
            }
        self._export(card, report)
        return {**base, "status": "ok", **report}

    def _export(self, card: ModelCard, report: dict[str, Any]) -> None:
        version = str(card.version)
        self.metrics.drift_window_rows.labels(card.name, version).set(report["window_rows"])
        columns = dict(report["features"])
        if report.get("prediction"):
            columns[PREDICTION] = report["prediction"]
        for feature, scores in columns.items():
            self.metrics.drift_psi.labels(card.name, version, feature).set(scores["psi"])
            if scores.get("ks") is not None:
                self.metrics.drift_ks.labels(card.name, version, feature).set(scores["ks"])

    async def _refresh_drift(self) -> None:
        while True:
            await asyncio.sleep(self.settings.drift_interval_s)
            for window in list(self.windows.values()):
                try:
                    await asyncio.to_thread(self.drift, window.card)
                except Exception:
                    log.exception("drift computation failed", extra={"model": window.card.ref})
