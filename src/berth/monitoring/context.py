"""What the data plane learned about the request being handled, for the layer that answers it.

The HTTP middleware (and the gRPC interceptor) opens a `RequestRecord` per request; the data plane
fills in the model and version it resolved and when each stage ended, so the access log, request
metrics and trace spans carry them without the routes passing anything along. Outside a request
(the CLI, tests calling the data plane) there is no record.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from berth.batching import BatchTicket

__all__ = ["RequestRecord", "current_request"]


@dataclass(slots=True)
class RequestRecord:
    """Filled in while a request is handled; read when its response starts."""

    model: str = ""
    version: str = ""
    variant: str = ""
    request_id: str = ""
    outcome: str = ""
    """`ok` or the error code of the prediction (empty when the request predicted nothing)."""
    started: float = 0.0
    """`time.perf_counter()` when the data plane started decoding the inputs."""
    decoded: float = 0.0
    """... when the inputs were decoded into a batch (and the prediction was asked for)."""
    predicted_at: float = 0.0
    """... when the data plane returned the prediction: encoding starts."""
    rows: int = 0
    logged: bool = False
    """The request's access-log line will carry the prediction's outcome and rows, so the data
    plane writes no separate prediction line."""
    batch: BatchTicket | None = None
    """The batch this request's rows ran in (only recorded while tracing is on)."""


current_request: ContextVar[RequestRecord | None] = ContextVar("berth_request", default=None)
