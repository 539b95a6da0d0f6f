"""Pure ASGI middleware: request metrics, in-flight gauge, the encode stage and the access log."""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from berth.logs import log_fields
from berth.monitoring.context import RequestRecord, current_request
from berth.monitoring.metrics import Metrics
from berth.server.middleware import request_id_of

__all__ = ["ObservabilityMiddleware", "RequestObserver"]

access_log = logging.getLogger("berth.access")

QUIET_PATHS = frozenset({"/metrics", "/health", "/ready", "/dashboard/data"})
"""Probes and scrapes: logged at debug level, so the access log shows traffic, not polling."""


def _endpoint(scope: Scope) -> str:
    """The route's path template (bounded cardinality), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestObserver:
    """Counts and times every HTTP request by model, version, variant, endpoint and status class,
    and writes its access-log line. `variant` is the traffic-split arm that served the request
    (empty while there is no split)."""

    def __init__(self, metrics: Metrics, access_log_on: bool = True) -> None:
        self.metrics = metrics
        self.access_log_on = access_log_on
        self._series: dict[tuple[str, str, str, str, str], tuple[Any, Any]] = {}
        self._encode: dict[tuple[str, str], Any] = {}

    def open(self) -> RequestRecord:
        """A new request's record (its access line will carry the prediction's outcome)."""
        return RequestRecord(logged=self.access_log_on and access_log.isEnabledFor(logging.INFO))

    def responding(self, record: RequestRecord, now: float) -> None:
        """The response starts: what came after the prediction was encoding."""
        if record.predicted_at:
            key = (record.model, record.version)
            encode = self._encode.get(key)
            if encode is None:
                encode = self._encode[key] = self.metrics.stage_duration.labels(*key, "encode")
            encode.observe(now - record.predicted_at)

    def finish(self, scope: Scope, record: RequestRecord, status: int, seconds: float) -> None:
        status_class = f"{status // 100}xx"
        labels = (record.model, record.version, record.variant, _endpoint(scope), status_class)
        series = self._series.get(labels)
        if series is None:  # resolved once per label set: `labels()` is the costly part
            series = (
                self.metrics.requests.labels(*labels),
                self.metrics.request_duration.labels(*labels),
            )
            self._series[labels] = series
        series[0].inc()
        series[1].observe(seconds)
        if self.access_log_on:
            _log(scope, record, status, seconds)


class ObservabilityMiddleware:
    """Observes every HTTP request (see `RequestObserver`) and counts those in flight."""

    def __init__(self, app: ASGIApp, observer: RequestObserver) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        record = self.observer.open()
        token = current_request.set(record)
        status = 500
        first_byte = 0.0
        observer = self.observer

        async def send_observed(message: Message) -> None:
            nonlocal status, first_byte
            if message["type"] == "http.response.start":
                status = message["status"]
                first_byte = time.perf_counter()
                observer.responding(record, first_byte)
            await send(message)

        in_flight = observer.metrics.in_flight
        in_flight.inc()
        try:
            await self.app(scope, receive, send_observed)
        finally:
            in_flight.dec()
            current_request.reset(token)
            observer.finish(scope, record, status, (first_byte or time.perf_counter()) - started)


def _log(scope: Scope, record: RequestRecord, status: int, seconds: float) -> None:
    path = scope.get("path", "")
    level = logging.DEBUG if path in QUIET_PATHS else logging.INFO
    method = scope.get("method", "")
    log_fields(
        access_log,
        level,
        f"{method} {path} {status}",
        {
            "request_id": request_id_of(scope),
            "method": method,
            "path": path,
            "endpoint": _endpoint(scope),
            "status": status,
            "latency_ms": round(seconds * 1000, 3),
            "model": record.model or None,
            "version": int(record.version) if record.version else None,
            "variant": record.variant or None,
            "outcome": record.outcome or None,
            "rows": record.rows if record.outcome else None,
            "client": (scope.get("client") or ("", 0))[0],
        },
    )
