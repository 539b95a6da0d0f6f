"""The hot path: predict requests answered in one function, in front of the whole ASGI stack.

Each pure-ASGI middleware layer wraps `send` and costs a few coroutine hops per request; with the
framework's own layers and FastAPI's routing, that cost was larger than a small model's
prediction (see docs/performance.md). `PredictFastPath` sits outside all of them, recognises
`POST [/models/{name}[/versions/{version}]]/predict[/batch]` (even before FastAPI's own
`__call__`, which checks its telemetry settings on every request), and does for those requests, in
order, what the stack does: request id and body limit, API key and rate limit, load guard and
timeout, the shared `rest.predict_response`, request metrics and the access log, security
headers. It calls the same functions as the middleware, so the two cannot drift apart; every
other request goes down the stack. With CORS origins configured it is not installed.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from berth.dataplane import DataPlane
from berth.errors import BerthError, PayloadTooLarge
from berth.monitoring.context import current_request
from berth.server.access import Gate, admit, path_requirement
from berth.server.errors import berth_error_response, error_response
from berth.server.guard import Deadlines, GuardState, with_security_headers
from berth.server.middleware import assign_request_id, body_limit_message, request_id_of
from berth.server.observe import RequestObserver
from berth.server.rest import predict_response
from berth.settings import Settings

__all__ = ["PredictFastPath"]

log = logging.getLogger("berth.server")

_PREDICT = re.compile(
    r"^(?:/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?)?/predict(?P<many>/batch)?$"
)
_JSON_TYPE = (b"content-type", b"application/json")
_CLIENT_GONE = 499  # nginx's code for a request whose client went away before the answer


class PredictFastPath:
    """Recognises and serves the predict routes (`BerthApp` asks it first, for every request)."""

    def __init__(
        self,
        dataplane: DataPlane,
        settings: Settings,
        routes: dict[str, Any],
        gate: Gate,
        guard: GuardState,
        observer: RequestObserver,
    ) -> None:
        self.dataplane = dataplane
        self.routes = routes  # path template -> FastAPI route, set in the scope for observers
        self.gate = gate
        self.guard = guard
        self.observer = observer
        self.public_paths = frozenset(settings.public_paths)
        self.max_body_bytes = settings.max_body_bytes
        self.timeout_s = settings.request_timeout_s
        self.deadlines = Deadlines(self.timeout_s) if self.timeout_s else None
        self.security_headers = settings.security_headers
        self._hardening = {
            https: with_security_headers([_JSON_TYPE], https)[1:] for https in (False, True)
        }

    def match(self, scope: Scope) -> tuple[str, re.Match[str]] | None:
        """The request's path (below the root path) and route match when it is a predict call."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        match = _PREDICT.match(path)
        return None if match is None else (path, match)

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, matched: tuple[str, re.Match[str]]
    ) -> None:
        """Answer a request `match` recognised."""
        path, match = matched
        name, version, many = match["name"], match["version"], match["many"] is not None
        template = "/predict"
        if name is not None:
            template = "/models/{name}" + ("/versions/{version}" if version else "") + template
        template += "/batch" if many else ""
        scope["route"] = self.routes.get(template)
        scope["path_params"] = {
            k: v for k, v in (("name", name), ("version", version)) if v is not None
        }

        started = time.perf_counter()
        responded = 0.0
        status = _CLIENT_GONE
        record = self.observer.open()
        token = current_request.set(record)
        in_flight = self.observer.metrics.in_flight
        in_flight.inc()
        try:
            request_id, length = assign_request_id(scope)
            headers: list[tuple[bytes, bytes]] = []
            response = await self._answer(
                scope, receive, path, name, version, many, length, headers
            )
            if response is None:
                return
            headers = [*response.raw_headers, *headers, (b"x-request-id", request_id)]
            if self.security_headers:  # every answer here is JSON without any of them yet
                headers += self._hardening[scope.get("scheme") == "https"]
            status = response.status_code
            responded = time.perf_counter()
            self.observer.responding(record, responded)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": response.body})
        finally:
            in_flight.dec()
            current_request.reset(token)
            seconds = (responded or time.perf_counter()) - started
            self.observer.finish(scope, record, status, seconds)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        path: str,
        name: str | None,
        version: str | None,
        many: bool,
        length: int,
        headers: list[tuple[bytes, bytes]],
    ) -> Response | None:
        """The response (None when the client went away); adds headers to send to `headers`."""
        if length > self.max_body_bytes:
            headers.append((b"connection", b"close"))
            return self._error(scope, PayloadTooLarge(body_limit_message(self.max_body_bytes)))
        need = path_requirement(path, self.public_paths, self.dataplane.default_name)
        if need is not None:
            denied, limit_headers = await admit(self.gate, scope, need)
            headers += limit_headers
            if denied is not None:
                return self._error(scope, denied)
        if path in self.public_paths:  # like the load guard: public paths are never shed
            return await self._predict(scope, receive, name, version, many)
        guard = self.guard
        overloaded = guard.over_limit()
        if overloaded is not None:
            return self._error(scope, overloaded)
        guard.in_flight += 1
        try:
            if self.deadlines is not None:
                response = await self._predict_in_time(
                    self.deadlines, scope, receive, name, version, many
                )
            else:
                response = await self._predict(scope, receive, name, version, many)
        finally:
            guard.in_flight -= 1
        if guard.draining:  # move keep-alive clients to another replica
            headers.append((b"connection", b"close"))
        return response

    async def _predict_in_time(
        self,
        deadlines: Deadlines,
        scope: Scope,
        receive: Receive,
        name: str | None,
        version: str | None,
        many: bool,
    ) -> Response | None:
        try:
            async with deadlines.timeout() as deadline:
                return await self._predict(scope, receive, name, version, many)
        except TimeoutError:
            if not deadline.expired():
                raise
            return self._error(scope, self.guard.timed_out(self.timeout_s))

    async def _predict(
        self, scope: Scope, receive: Receive, name: str | None, version: str | None, many: bool
    ) -> Response | None:
        try:
            body = await self._read_body(receive)
            if body is None:
                return None
            return await predict_response(self.dataplane, body, scope, name, version, many)
        except BerthError as exc:
            return self._error(scope, exc)
        except Exception as exc:
            log.error("unhandled error", exc_info=exc, extra={"request_id": request_id_of(scope)})
            return error_response(500, "internal server error", "internal_error")

    async def _read_body(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise PayloadTooLarge(body_limit_message(self.max_body_bytes))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @staticmethod
    def _error(scope: Scope, error: BerthError) -> Response:
        return berth_error_response(error, request_id_of(scope))
