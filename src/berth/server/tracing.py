"""Pure ASGI middleware: one OpenTelemetry server span per HTTP request (added only when tracing
is on; the span's children come from the data plane's record, see `berth.monitoring.tracing`).
Probes and scrapes (`/health`, `/ready`, `/metrics`, the dashboard's polling) are not traced."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from berth.monitoring.context import current_request
from berth.monitoring.tracing import Tracing
from berth.server.middleware import request_id_of
from berth.server.observe import QUIET_PATHS

__all__ = ["TracingMiddleware"]


def _route(scope: Scope) -> str | None:
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else None


class TracingMiddleware:
    """Sits inside the metrics middleware (whose request record it reads) and outside the request
    ids, key checks and limits (so refused requests have spans too)."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in QUIET_PATHS:
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        client = scope.get("client")
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
        }
        if client:
            attributes["client.address"] = client[0]
        active = self.tracing.begin(method, carrier, attributes)
        if active is None:
            await self.app(scope, receive, send)
            return
        status = 500
        first_byte = 0.0

        async def send_traced(message: Message) -> None:
            nonlocal status, first_byte
            if message["type"] == "http.response.start":
                status, first_byte = message["status"], time.perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, send_traced)
        finally:
            finished = time.perf_counter()
            route = _route(scope)
            answer: dict[str, Any] = {"http.response.status_code": status}
            if route is not None:
                answer["http.route"] = route
            if request_id := request_id_of(scope):
                answer["berth.request_id"] = request_id
            self.tracing.end(
                active,
                current_request.get(),
                answer,
                error=str(status) if status >= 500 else None,
                responded=first_byte or finished,
                finished=finished,
                name=f"{method} {route}" if route else method,
            )
