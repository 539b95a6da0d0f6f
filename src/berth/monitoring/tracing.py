"""OpenTelemetry spans of requests, when `BERTH_TRACING` is `console` or `otlp` (`berth[otel]`).

Nothing imports this module while tracing is off, so no opentelemetry module is loaded then and
the request path does no tracing work at all.

One SERVER span per HTTP request or unary gRPC call continues the caller's trace (W3C
`traceparent`; `OTEL_PROPAGATORS` picks others). Its children are built when the request ends from
the times the data plane recorded (`monitoring/context.py`), so the stages themselves stay free of
tracing code:

    POST /models/{name}/predict   route, status, berth.model/.version/.variant/.request_id
    ├── berth.decode              JSON instances or tensors to a batch
    ├── berth.queue               waiting for a batch slot (only when batching)
    ├── berth.predict             the model call of the batch the request's rows ran in
    └── berth.encode              outputs to the response (until the first byte, for HTTP)

A batch merges several requests; each request's trace gets its own `berth.queue` and
`berth.predict` spans, with the batch's size as `berth.batch.rows` and `berth.batch.requests`.
The predict spans of the requests of one batch have the same start and end: the batch's model
call, from leaving the queue until the outputs are back on the event loop.

The provider is built by `start()`, which the data plane's monitor calls in each serving process
(after the fork under `--workers`: an exporter's thread does not survive fork), and flushed by
`shutdown()`. It is not installed as the global provider: two apps in one process (tests) keep
their spans apart.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from berth import __version__
from berth.errors import MissingExtra
from berth.monitoring.context import RequestRecord

try:
    from opentelemetry import propagate, trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
        SpanExporter,
    )
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise MissingExtra(
        f"BERTH_TRACING needs {exc.name}: pip install 'berth[otel]' (or set BERTH_TRACING=off)"
    ) from exc

__all__ = ["ActiveSpan", "Tracing"]

_SERVICE = "berth"
_CLOCK_RENEW_S = 60.0


@dataclass(slots=True)
class ActiveSpan:
    """A started server span and the clock pair that turns `perf_counter()` readings into the
    wall-clock nanoseconds spans carry."""

    span: trace.Span
    wall_ns: int
    perf: float

    def ns(self, perf_time: float) -> int:
        return self.wall_ns + int((perf_time - self.perf) * 1e9)


def _resource() -> Resource:
    resource = Resource.create({"service.version": __version__, "process.pid": os.getpid()})
    name = str(resource.attributes.get("service.name", ""))
    if not name or name.startswith(
        "unknown_service"
    ):  # neither OTEL_SERVICE_NAME nor ..._ATTRIBUTES
        resource = resource.merge(Resource({"service.name": _SERVICE}))
    return resource


class Tracing:
    """Starts and ends the spans of requests, on a provider owned by one serving process.

    `mode` is the `BERTH_TRACING` value; `exporter` replaces the one it names (tests pass an
    in-memory exporter), and is then called synchronously as each span ends.
    """

    def __init__(self, mode: str, exporter: SpanExporter | None = None) -> None:
        self.mode = mode
        self._exporter = exporter
        self.provider: TracerProvider | None = None
        self.tracer: trace.Tracer | None = None
        self._clock = (0.0, 0)  # (perf_counter(), time_ns()) read together, renewed each minute

    def start(self) -> None:
        """Build the provider and its exporter in this process (the sampler comes from
        `OTEL_TRACES_SAMPLER`, the OTLP endpoint and headers from `OTEL_EXPORTER_OTLP_*`)."""
        if self.provider is not None:
            return
        processor: SpanProcessor
        if self._exporter is not None:
            processor = SimpleSpanProcessor(self._exporter)
        elif self.mode == "console":  # for a person watching: print each span as it ends
            processor = SimpleSpanProcessor(ConsoleSpanExporter())
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            processor = BatchSpanProcessor(OTLPSpanExporter())
        provider = TracerProvider(resource=_resource())
        provider.add_span_processor(processor)
        self.provider = provider
        self.tracer = provider.get_tracer("berth", __version__)

    def shutdown(self) -> None:
        """Export the spans still waiting and stop the exporter (blocking: call it off the loop)."""
        provider, self.provider, self.tracer = self.provider, None, None
        if provider is not None:
            provider.shutdown()

    # -- per request ------------------------------------------------------------------------

    def begin(
        self, name: str, carrier: Mapping[str, str], attributes: dict[str, Any]
    ) -> ActiveSpan | None:
        """Start a server span that continues the trace named in `carrier` (request headers or
        gRPC metadata); None before `start()`."""
        tracer = self.tracer
        if tracer is None:
            return None
        now = time.perf_counter()
        perf, wall = self._clock
        if now - perf > _CLOCK_RENEW_S:
            # One pair for all requests, so that the requests of one batch get identical times
            perf, wall = self._clock = (time.perf_counter(), time.time_ns())
        span = tracer.start_span(
            name,
            context=propagate.extract(carrier),
            kind=trace.SpanKind.SERVER,
            attributes=attributes,
            start_time=wall + int((now - perf) * 1e9),
        )
        return ActiveSpan(span, wall, perf)

    def end(
        self,
        active: ActiveSpan,
        record: RequestRecord | None,
        attributes: dict[str, Any],
        *,
        error: str | None,
        responded: float,
        finished: float | None = None,
        name: str | None = None,
    ) -> None:
        """End the server span at `finished` (default `responded`), with the stages the record
        holds as children; `responded` ends the encode stage (all `perf_counter()` readings).
        `error`: the `error.type` of a server-side failure, else None."""
        span = active.span
        if span.is_recording():  # false when the sampler dropped this trace
            if name is not None:
                span.update_name(name)
            if record is not None:
                attributes.update(_record_attributes(record))
                self._stages(active, record, responded)
            span.set_attributes(attributes)
            if error is not None:
                span.set_attribute("error.type", error)
                span.set_status(trace.Status(trace.StatusCode.ERROR))
        span.end(end_time=active.ns(finished or responded))

    def _stages(self, active: ActiveSpan, record: RequestRecord, responded: float) -> None:
        tracer = self.tracer
        if tracer is None or not record.started:
            return
        parent = trace.set_span_in_context(active.span)
        labels = {"berth.model": record.model, "berth.version": record.version}
        for name, start, end, extra in _stage_times(record, responded):
            child = tracer.start_span(
                name, context=parent, start_time=active.ns(start), attributes={**labels, **extra}
            )
            child.end(end_time=active.ns(end))


def _record_attributes(record: RequestRecord) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for key, value in (
        ("berth.model", record.model),
        ("berth.version", record.version),
        ("berth.variant", record.variant),
        ("berth.request_id", record.request_id),
        ("berth.outcome", record.outcome),
    ):
        if value:
            attributes[key] = value
    return attributes


def _stage_times(
    record: RequestRecord, responded: float
) -> Iterable[tuple[str, float, float, dict[str, Any]]]:
    """(span name, start, end, attributes) of each stage the record saw, in order."""
    if not record.decoded:  # failed while decoding or predicting: the server span says how
        return
    yield "berth.decode", record.started, record.decoded, {}
    predict_from, predict_to, batch = record.decoded, record.predicted_at, {}
    ticket = record.batch
    if ticket is not None and ticket.dispatched:
        batch = {"berth.batch.rows": ticket.rows, "berth.batch.requests": ticket.requests}
        yield "berth.queue", record.decoded, ticket.dispatched, batch
        predict_from, predict_to = ticket.dispatched, ticket.finished or predict_to
    yield "berth.predict", predict_from, predict_to, batch
    if responded > record.predicted_at:
        yield "berth.encode", record.predicted_at, responded, {}
