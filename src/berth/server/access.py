"""API keys (401/403) and rate limits (429) before any route runs: one gate for both protocols,
and the pure ASGI middleware that puts it in front of the HTTP routes."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from berth.errors import BerthError, RateLimited, Unauthorized, Unavailable
from berth.monitoring.metrics import Metrics
from berth.security.access import Requirement, authorize, is_loopback, requirement_for
from berth.security.keys import ApiKey, KeyStore
from berth.security.ratelimit import Decision, RateLimiter
from berth.server.guard import send_error

__all__ = ["AccessMiddleware", "Gate", "RateLimits", "Verdict", "admit", "path_requirement"]

log = logging.getLogger("berth.ratelimit")

_DEFAULT_ROUTES = frozenset({"/predict", "/predict/batch", "/model/info"})
_LOG_EVERY_S = 10.0


class RateLimits:
    """Which bucket a request draws from: its key's, or (without a valid key) its address's.

    Refusals are counted (`limited`, and the metrics) and logged, one line per 10 s at most.
    """

    def __init__(
        self,
        limiter: RateLimiter,
        key_rate: float,
        key_burst: int | None,
        address_rate: float,
        address_burst: int | None,
        metrics: Metrics | None = None,
    ) -> None:
        self.limiter = limiter
        self.key = (key_rate, key_burst or max(1, math.ceil(key_rate)))
        self.address = (address_rate, address_burst or max(1, math.ceil(address_rate)))
        self.metrics = metrics
        self.limited = 0
        self._unlogged = 0
        self._logged_at = float("-inf")

    async def take(
        self, key_id: str | None, address: str, protocol: str = "http"
    ) -> Decision | None:
        rate, burst = self.key if key_id else self.address
        if not rate:
            return None
        bucket = f"key:{key_id}" if key_id else f"addr:{address}"
        decision = await self.limiter.take(bucket, rate, burst)
        if decision.storage_failed:
            if self.metrics:
                self.metrics.rate_limit_storage_errors.inc()
        elif not decision.allowed:
            self.limited += 1
            if self.metrics:
                self.metrics.rate_limited.labels("key" if key_id else "address", protocol).inc()
            self._log_refusal(bucket, protocol)
        return decision

    def _log_refusal(self, bucket: str, protocol: str) -> None:
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY_S:
            log.warning(
                "rate limit exceeded",
                extra={"refused": self._unlogged, "bucket": bucket, "protocol": protocol},
            )
            self._logged_at, self._unlogged = now, 0


def refusal(decision: Decision) -> BerthError:
    """The error for a request its bucket refused."""
    if decision.storage_failed:
        return Unavailable("rate-limit storage is unreachable: retry shortly")
    retry = max(1, math.ceil(decision.retry_after_s))
    return RateLimited(
        f"rate limit of {decision.limit} requests exceeded: retry in {retry} s", retry
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the gate decided: the caller's key, its bucket's state, and the error to answer."""

    key: ApiKey | None
    decision: Decision | None
    error: BerthError | None


class Gate:
    """Judges one call, the same way for HTTP and gRPC: its key, then its rate limit."""

    def __init__(
        self, store: KeyStore, limits: RateLimits | None, metrics: Metrics | None = None
    ) -> None:
        self.store = store
        self.limits = limits
        self.metrics = metrics

    async def check(
        self, token: str | None, need: Requirement, address: str, protocol: str
    ) -> Verdict:
        denied: BerthError | None = None
        key = None
        try:
            key = authorize(self.store, token, need, loopback=is_loopback(address))
        except BerthError as exc:  # answered after the rate limit, which also slows guessing
            denied = exc
        limits = self.limits
        decision = await limits.take(key.id if key else None, address, protocol) if limits else None
        if decision is not None and not decision.allowed:
            return Verdict(key, decision, refusal(decision))
        if denied is not None and self.metrics:
            self.metrics.access_denied.labels(denied.code, protocol).inc()
        return Verdict(key, decision, denied)


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


async def admit(
    gate: Gate, scope: Scope, need: Requirement
) -> tuple[BerthError | None, list[tuple[bytes, bytes]]]:
    """Ask the gate about an HTTP request: the error to answer with (None to go on) and the
    headers to send either way (rate-limit state, `WWW-Authenticate`)."""
    client = scope.get("client")
    address = client[0] if client else ""
    verdict = await gate.check(_token(scope["headers"]), need, address, "http")
    headers = _rate_headers(verdict.decision) if verdict.decision else []
    if verdict.error is not None:
        if isinstance(verdict.error, Unauthorized):
            headers.append((b"www-authenticate", b'Bearer realm="berth"'))
        return verdict.error, headers
    if verdict.key is not None:
        scope.setdefault("state", {})["api_key"] = verdict.key.id
    return None, headers


def path_requirement(
    path: str, public_paths: frozenset[str], default_model: str | None
) -> Requirement | None:
    """What a request for `path` needs; None on a public path. The default model's routes
    (`/predict`, `/model/info`) need a predict key for that model."""
    need = requirement_for(path, public_paths)
    if need.need == "public":
        return None
    if need.need == "predict" and path in _DEFAULT_ROUTES:
        return Requirement("predict", default_model)
    return need


class AccessMiddleware:
    """Decides, from the path alone, what a request needs, then asks the gate."""

    def __init__(
        self,
        app: ASGIApp,
        gate: Gate,
        public_paths: frozenset[str],
        default_model: str | None,
        routes: Sequence[BaseRoute],
    ) -> None:
        self.app = app
        self.gate = gate
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
        error, headers = await admit(self.gate, scope, need)
        if error is not None:
            await send_error(send, error, headers)
            return
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
        need = path_requirement(scope["path"], self.public_paths, self.default_model)
        if (
            need is not None
            and need.need == "admin"
            and not any(route.matches(scope)[0] is not Match.NONE for route in self.routes)
        ):
            return None
        return need
