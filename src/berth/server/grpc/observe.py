"""A grpc.aio interceptor that counts and times unary gRPC calls like HTTP requests (and traces them).

Calls land in `berth_requests_total` and `berth_request_duration_seconds` with `endpoint` set to
`grpc:<Method>` (`grpc:ModelInfer`, `grpc:ModelMetadata`, `grpc:Check` ...) and `status_class`
from the call's status code, mapped as HTTP gateways map it (NOT_FOUND 4xx, UNAVAILABLE 5xx ...).
Streaming calls (`ModelStreamInfer`, health `Watch`, reflection) pass through uncounted. With
tracing on, each call also gets a server span, except the probes (`ServerLive`, `ServerReady`,
health `Check`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from berth.monitoring.context import RequestRecord, current_request
from berth.monitoring.monitor import Monitor

__all__ = ["ObserveInterceptor", "status_class"]

Behavior = Callable[[Any, Any], Awaitable[Any]]

UNTRACED = frozenset({"ServerLive", "ServerReady", "Check"})
"""Probes: counted, but no span (a Kubernetes probe every few seconds would flood the traces)."""

_CLIENT_ERRORS = frozenset(
    {
        grpc.StatusCode.CANCELLED,  # 499
        grpc.StatusCode.INVALID_ARGUMENT,  # 400
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,  # 409
        grpc.StatusCode.PERMISSION_DENIED,  # 403
        grpc.StatusCode.UNAUTHENTICATED,  # 401
        grpc.StatusCode.RESOURCE_EXHAUSTED,  # 429
        grpc.StatusCode.FAILED_PRECONDITION,  # 400
        grpc.StatusCode.ABORTED,  # 409
        grpc.StatusCode.OUT_OF_RANGE,  # 400
    }
)


def status_class(code: grpc.StatusCode) -> str:
    """`2xx`, `4xx` or `5xx` for a gRPC status (UNKNOWN, INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED,
    UNIMPLEMENTED and DATA_LOSS are server errors)."""
    if code is grpc.StatusCode.OK:
        return "2xx"
    return "4xx" if code in _CLIENT_ERRORS else "5xx"


def _status_of(context: Any, default: grpc.StatusCode) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # some grpc versions answer the number
        return next((c for c in grpc.StatusCode if c.value[0] == code), default)
    return default


class ObserveInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Register it first (outermost), so calls that a later interceptor refuses count too."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self._handlers: dict[str, tuple[Any, Any]] = {}  # method -> (its handler, wrapped)
        self._series: dict[tuple[str, str, str, str, str], tuple[Any, Any]] = {}

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        known = self._handlers.get(details.method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._observed(details.method, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._handlers[details.method] = (handler, wrapped)
        return wrapped

    def _observed(self, method: str, behavior: Behavior) -> Behavior:
        full_name = method.lstrip("/")  # inference.GRPCInferenceService/ModelInfer
        service, _, rpc = full_name.rpartition("/")
        endpoint = f"grpc:{rpc}"
        metrics = self.monitor.metrics
        traced = rpc not in UNTRACED

        async def observed(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            record = RequestRecord()
            token = current_request.set(record)
            tracing = self.monitor.tracing if traced else None
            active = None
            if tracing is not None:
                carrier = {key: value for key, value in context.invocation_metadata() or ()}
                attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}
                active = tracing.begin(full_name, carrier, attributes)
            code = grpc.StatusCode.UNKNOWN
            metrics.in_flight.inc()
            try:
                reply = await behavior(request, context)
                code = _status_of(context, grpc.StatusCode.OK)
                return reply
            except grpc.aio.AbortError:
                code = _status_of(context, grpc.StatusCode.UNKNOWN)
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            finally:
                finished = time.perf_counter()
                metrics.in_flight.dec()
                current_request.reset(token)
                labels = (
                    record.model,
                    record.version,
                    record.variant,
                    endpoint,
                    status_class(code),
                )
                self._count(labels, finished - started)
                if tracing is not None and active is not None:
                    tracing.end(
                        active,
                        record,
                        {"rpc.grpc.status_code": code.value[0]},
                        error=code.name if status_class(code) == "5xx" else None,
                        responded=finished,
                    )

        return observed

    def _count(self, labels: tuple[str, str, str, str, str], seconds: float) -> None:
        series = self._series.get(labels)
        if series is None:
            metrics = self.monitor.metrics
            series = (metrics.requests.labels(*labels), metrics.request_duration.labels(*labels))
            self._series[labels] = series
        series[0].inc()
        series[1].observe(seconds)
