"""What the data plane learned about the request being handled, for the layer that answers it.

The HTTP middleware opens a `RequestRecord` per request; the data plane fills in the model and
version it resolved, so the access log and request metrics carry them without the routes passing
anything along. Outside a request (the CLI, tests calling the data plane) there is no record.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["RequestRecord", "current_request"]


@dataclass(slots=True)
class RequestRecord:
    """Filled in while a request is handled; read when its response starts."""

    model: str = ""
    version: str = ""
    variant: str = ""
    predicted_at: float = 0.0
    """`time.perf_counter()` when the data plane returned the prediction: encoding starts."""


current_request: ContextVar[RequestRecord | None] = ContextVar("berth_request", default=None)
