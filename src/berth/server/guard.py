"""Pure ASGI middleware that keeps the server answering: a bound on requests in flight (503 at
once beyond it), a per-request timeout (504), `Connection: close` while draining, and the
security headers every response carries."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from berth.errors import BerthError, Overloaded, Timeout
from berth.monitoring.metrics import Metrics

__all__ = [
    "Deadlines",
    "GuardState",
    "LoadGuardMiddleware",
    "SecurityHeadersMiddleware",
    "send_error",
    "with_security_headers",
]


async def send_error(
    send: Send, error: BerthError, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Answer with the one error body, from middleware that runs before the error handlers."""
    body = orjson.dumps({"error": error.message, "code": error.code})
    retry = getattr(error, "retry_after_s", None)
    extra = [(b"retry-after", str(retry).encode())] if retry is not None else []
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra,
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Deadlines:
    """`asyncio.timeout(seconds)` for every request, with one timer per `resolution` seconds of
    deadlines instead of one per request (a timer per request costs a handle, a copy of the
    context and a heap entry to push and cancel: ~3% of a small request's instructions). A
    deadline fires up to `resolution` late."""

    def __init__(self, seconds: float, resolution: float = 0.05) -> None:
        self.seconds = seconds
        self.resolution = min(resolution, seconds / 10)
        self._windows: dict[int, set[Deadline]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # where the windows' timers are

    def timeout(self) -> Deadline:
        """`async with deadlines.timeout() as deadline:` as with `asyncio.timeout(seconds)`."""
        return Deadline(self)

    def _watch(self, deadline: Deadline) -> int:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (an app restarted in tests): new timers
            self._loop, self._windows = loop, {}
        window = math.ceil((loop.time() + self.seconds) / self.resolution)
        waiting = self._windows.get(window)
        if waiting is None:
            waiting = self._windows[window] = set()
            loop.call_at(window * self.resolution, self._expire, window)
        waiting.add(deadline)
        return window

    def _forget(self, deadline: Deadline, window: int) -> None:
        waiting = self._windows.get(window)
        if waiting is not None:
            waiting.discard(deadline)

    def _expire(self, window: int) -> None:
        for deadline in self._windows.pop(window, ()):
            deadline.cancel_task()


class Deadline:
    """One request's deadline; raises TimeoutError from its block once expired, like
    `asyncio.Timeout` (whose cancel-and-uncancel protocol it follows)."""

    __slots__ = ("_cancelling", "_expired", "_owner", "_task", "_window")

    def __init__(self, owner: Deadlines) -> None:
        self._owner = owner
        self._expired = False

    def expired(self) -> bool:
        return self._expired

    def cancel_task(self) -> None:
        self._expired = True
        self._task.cancel()

    async def __aenter__(self) -> Deadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline needs a running task")
        self._task = task
        self._cancelling = task.cancelling()
        self._window = self._owner._watch(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._owner._forget(self, self._window)
        if (
            self._expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc


@dataclass(slots=True)
class GuardState:
    """Live counters of the guard, shared with the runner (draining) and the admin status route."""

    max_in_flight: int
    metrics: Metrics | None = None
    in_flight: int = 0
    shed: int = 0
    timeouts: int = 0
    draining: bool = False

    def over_limit(self) -> Overloaded | None:
        """The 503 to answer when one more request would exceed the bound (counted as shed)."""
        if not self.max_in_flight or self.in_flight < self.max_in_flight:
            return None
        self.shed += 1
        if self.metrics is not None:
            self.metrics.requests_shed.inc()
        return Overloaded(
            f"server is at its limit of {self.max_in_flight} requests in flight "
            "(BERTH_MAX_IN_FLIGHT): retry shortly"
        )

    def timed_out(self, timeout_s: float) -> Timeout:
        """The 504 for a request that ran past `timeout_s` (counted)."""
        self.timeouts += 1
        if self.metrics is not None:
            self.metrics.request_timeouts.inc()
        return Timeout(f"request took longer than {timeout_s:g} s (BERTH_REQUEST_TIMEOUT_S)")


class LoadGuardMiddleware:
    """Sheds requests beyond `max_in_flight` with 503 and answers 504 after `timeout_s`.

    Public paths (health, readiness, docs) pass untouched, so probes answer under any load.
    """

    def __init__(
        self,
        app: ASGIApp,
        state: GuardState,
        public_paths: frozenset[str],
        timeout_s: float,
    ) -> None:
        self.app = app
        self.state = state
        self.public_paths = public_paths
        self.timeout_s = timeout_s
        self.deadlines = Deadlines(timeout_s) if timeout_s else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public_paths:
            await self.app(scope, receive, send)
            return
        state = self.state
        overloaded = state.over_limit()
        if overloaded is not None:
            await send_error(send, overloaded)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if state.draining:  # move keep-alive clients to another replica
                    message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        state.in_flight += 1
        try:
            if self.deadlines is not None:
                await self._with_timeout(
                    self.deadlines, scope, receive, send_tracked, send, lambda: started
                )
            else:
                await self.app(scope, receive, send_tracked)
        finally:
            state.in_flight -= 1

    async def _with_timeout(
        self,
        deadlines: Deadlines,
        scope: Scope,
        receive: Receive,
        send_tracked: Send,
        send: Send,
        started: Any,
    ) -> None:
        try:
            async with deadlines.timeout() as deadline:
                await self.app(scope, receive, send_tracked)
        except TimeoutError:
            if not deadline.expired() or started():  # a response already began: just cut it
                raise
            await send_error(send, self.state.timed_out(self.timeout_s))


_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
_JSON_ONLY = [
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cache-control", b"no-store"),
]
_HSTS = (b"strict-transport-security", b"max-age=31536000")


def with_security_headers(
    headers: Iterable[tuple[bytes, bytes]], https: bool
) -> list[tuple[bytes, bytes]]:
    """`headers` and the hardening headers they do not already set."""
    headers = list(headers)
    present = {name.lower() for name, _ in headers}
    extra = list(_HEADERS)
    if (b"content-type", b"application/json") in headers:
        extra += _JSON_ONLY
    if https:
        extra.append(_HSTS)
    headers += [(name, value) for name, value in extra if name not in present]
    return headers


class SecurityHeadersMiddleware:
    """Adds hardening headers; JSON answers also get a deny-all CSP and `Cache-Control: no-store`
    (the /docs page keeps loading its scripts)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_security_headers(message.get("headers", []), https)
            await send(message)

        await self.app(scope, receive, send_with_headers)
