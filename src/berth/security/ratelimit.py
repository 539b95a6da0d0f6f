"""Token-bucket rate limits, in process memory or shared by every process through Redis.

A bucket holds up to `burst` tokens and refills at `rate` per second; a request takes one token.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = [
    "Decision",
    "MemoryRateLimiter",
    "RateLimiter",
    "RedisRateLimiter",
    "build_rate_limiter",
]

log = logging.getLogger("berth.ratelimit")


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of taking one token: whether it was there, and what the headers should say."""

    allowed: bool
    limit: int
    remaining: int
    retry_after_s: float
    reset_s: float
    storage_failed: bool = False

    @classmethod
    def from_tokens(cls, allowed: bool, tokens: float, rate: float, burst: int) -> Decision:
        return cls(
            allowed=allowed,
            limit=burst,
            remaining=max(0, math.floor(tokens)),
            retry_after_s=0.0 if allowed else max(0.0, (1.0 - tokens) / rate),
            reset_s=max(0.0, (burst - tokens) / rate),
        )


class RateLimiter(Protocol):
    """Takes one token from a named bucket."""

    name: str
    storage_errors: int

    async def take(self, bucket: str, rate: float, burst: int) -> Decision: ...

    async def close(self) -> None: ...


class MemoryRateLimiter:
    """Buckets in this process's memory: exact, fast, and per process."""

    name = "memory"

    def __init__(self, max_buckets: int = 100_000) -> None:
        self.max_buckets = max_buckets
        self.storage_errors = 0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    async def take(self, bucket: str, rate: float, burst: int) -> Decision:
        now = time.monotonic()
        with self._lock:
            tokens, updated = self._buckets.get(bucket, (float(burst), now))
            tokens = min(float(burst), tokens + (now - updated) * rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            if len(self._buckets) >= self.max_buckets and bucket not in self._buckets:
                self._forget_full(now, rate, burst)
            self._buckets[bucket] = (tokens, now)
        return Decision.from_tokens(allowed, tokens, rate, burst)

    def _forget_full(self, now: float, rate: float, burst: int) -> None:
        """Drop buckets that have refilled (they behave exactly like missing ones)."""
        full = [k for k, (t, u) in self._buckets.items() if t + (now - u) * rate >= burst]
        for key in full or list(self._buckets)[: self.max_buckets // 10]:
            del self._buckets[key]

    async def close(self) -> None:
        return None


# KEYS[1] bucket; ARGV rate, burst. Redis's own clock, so every process agrees on time.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local updated = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(tokens)}
"""


class RedisRateLimiter:
    """Buckets in Redis, updated by one atomic script, so limits hold across workers and replicas.

    When Redis cannot be reached, requests pass (`on_error="open"`) or are refused
    (`"closed"`); each such request is counted in `storage_errors`, and Redis is not tried again
    for `retry_s`, so an outage adds no latency.
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        on_error: Literal["open", "closed"] = "open",
        timeout_s: float = 0.25,
        retry_s: float = 1.0,
        prefix: str = "berth:ratelimit:",
    ) -> None:
        try:
            import redis.asyncio as redis
        except ImportError as exc:
            from berth.errors import MissingExtra

            raise MissingExtra(
                "BERTH_RATE_LIMIT_STORAGE=redis://... needs redis-py: pip install 'berth[redis]'"
            ) from exc
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.client: Any = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self.script = self.client.register_script(_TAKE)
        self.on_error = on_error
        self.retry_s = retry_s
        self.prefix = prefix
        self.storage_errors = 0
        self._down_until = 0.0
        self._logged_at = float("-inf")

    async def take(self, bucket: str, rate: float, burst: int) -> Decision:
        if time.monotonic() >= self._down_until:
            try:
                allowed, tokens = await self.script(keys=[self.prefix + bucket], args=[rate, burst])
                return Decision.from_tokens(bool(allowed), float(tokens), rate, burst)
            except self._errors as exc:
                self._down_until = time.monotonic() + self.retry_s
                self._report(exc)
        self.storage_errors += 1
        allowed = self.on_error == "open"
        return Decision(allowed, burst, burst if allowed else 0, self.retry_s, 0.0, True)

    def _report(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._logged_at >= 10.0:  # one line per outage burst, not one per request
            self._logged_at = now
            log.error(
                "rate-limit storage unreachable; failing %s",
                self.on_error,
                extra={"error": f"{type(exc).__name__}: {exc}", "errors": self.storage_errors},
            )

    async def close(self) -> None:
        await self.client.aclose()


def build_rate_limiter(storage: str, on_error: Literal["open", "closed"]) -> RateLimiter:
    """`memory`, or a `redis://` / `rediss://` / `unix://` URL."""
    if storage == "memory":
        return MemoryRateLimiter()
    if storage.startswith(("redis://", "rediss://", "unix://")):
        return RedisRateLimiter(storage, on_error)
    from berth.errors import InvalidInput

    raise InvalidInput(
        f"BERTH_RATE_LIMIT_STORAGE must be 'memory' or a redis:// URL, got {storage!r}"
    )
