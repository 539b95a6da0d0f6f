"""Pure ASGI middleware: API keys (401/403) and rate limits (429) before any route runs."""

from __future__ import annotations

import math
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from berth.errors import BerthError, RateLimited, Unauthorized, Unavailable
from berth.security.access import Requirement, authorize, is_loopback, requirement_for
from berth.security.keys import KeyStore
from berth.security.ratelimit import Decision, RateLimiter
from berth.server.guard import send_error

__all__ = ["AccessMiddleware", "RateLimits"]

_DEFAULT_ROUTES = frozenset({"/predict", "/predict/batch", "/model/info"})


class RateLimits:
    """Which bucket a request draws from: its key's, or (without a valid key) its address's."""

    def __init__(
        self,
        limiter: RateLimiter,
        key_rate: float,
        key_burst: int | None,
        address_rate: float,
        address_burst: int | None,
    ) -> None:
        self.limiter = limiter
        self.key = (key_rate, key_burst or max(1, math.ceil(key_rate)))
        self.address = (address_rate, address_burst or max(1, math.ceil(address_rate)))
        self.limited = 0

    async def take(self, key_id: str | None, address: str) -> Decision | None:
        rate, burst = self.key if key_id else self.address
        if not rate:
            return None
        bucket = f"key:{key_id}" if key_id else f"addr:{address}"
        decision = await self.limiter.take(bucket, rate, burst)
        if not decision.allowed and not decision.storage_failed:
            self.limited += 1
        return decision


def _token(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
        elif name == b"x-api-key" and value.strip():
            return value.decode("latin-1").strip()
    return None


def _rate_headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    return [
        (b"ratelimit-limit", str(decision.limit).encode()),
        (b"ratelimit-remaining", str(decision.remaining).encode()),
        (b"ratelimit-reset", str(math.ceil(decision.reset_s)).encode()),
    ]


class AccessMiddleware:
    """Decides, from the path alone, what a request needs, then checks its key and its budget."""

    def __init__(
        self,
        app: ASGIApp,
        store: KeyStore,
        limits: RateLimits | None,
        public_paths: frozenset[str],
        default_model: str | None,
        routes: Sequence[BaseRoute],
    ) -> None:
        self.app = app
        self.store = store
        self.limits = limits
        self.public_paths = public_paths
        self.default_model = default_model
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        need = self._requirement(scope)
        if need is None:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = client[0] if client else ""
        denied: BerthError | None = None
        key = None
        try:
            key = authorize(
                self.store, _token(scope["headers"]), need, loopback=is_loopback(address)
            )
        except BerthError as exc:  # answered after the rate limit, which also slows guessing
            denied = exc
        decision = await self.limits.take(key.id if key else None, address) if self.limits else None
        headers = _rate_headers(decision) if decision else []
        if decision and not decision.allowed:
            if decision.storage_failed:
                error: BerthError = Unavailable("rate-limit storage is unreachable: retry shortly")
            else:
                retry = max(1, math.ceil(decision.retry_after_s))
                error = RateLimited(
                    f"rate limit of {decision.limit} requests exceeded: retry in {retry} s", retry
                )
            await send_error(send, error, headers)
            return
        if denied is not None:
            if isinstance(denied, Unauthorized):
                headers.append((b"www-authenticate", b'Bearer realm="berth"'))
            await send_error(send, denied, headers)
            return
        if key is not None:
            scope.setdefault("state", {})["api_key"] = key.id
        if not headers:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _requirement(self, scope: Scope) -> Requirement | None:
        """What the request needs; None when nothing (public paths, and paths no route serves,
        which the router answers 404 or 405)."""
        path: str = scope["path"]
        need = requirement_for(path, self.public_paths)
        if need.need == "public":
            return None
        if need.need == "predict" and path in _DEFAULT_ROUTES:
            return Requirement("predict", self.default_model)
        if need.need == "admin" and not any(
            route.matches(scope)[0] is not Match.NONE for route in self.routes
        ):
            return None
        return need
