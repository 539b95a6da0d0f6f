"""Token-bucket rate limits: in memory, shared through a real Redis by two server processes, and
what happens when Redis is unreachable."""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest

from berth.registry import Registry
from berth.security.keys import KeyStore, default_keys_path
from berth.security.ratelimit import MemoryRateLimiter, RedisRateLimiter
from tests.conftest import ClientFactory
from tests.fakes import register_fake
from tests.servers import berth_server, free_port
from tests.test_metrics import value

ONE = {"features": [1.0, 2.0, 3.0]}
REDIS_URL = os.environ.get("BERTH_TEST_REDIS_URL")
needs_redis = pytest.mark.skipif(
    not REDIS_URL, reason="set BERTH_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/0) to run"
)


def test_memory_bucket_allows_burst_then_refills() -> None:
    limiter = MemoryRateLimiter()

    async def scenario() -> list[bool]:
        first = [(await limiter.take("a", 10.0, 2)).allowed for _ in range(3)]
        denied = await limiter.take("a", 10.0, 2)
        assert 0.0 < denied.retry_after_s <= 0.1
        assert (await limiter.take("b", 10.0, 2)).allowed  # another bucket is untouched
        await asyncio.sleep(0.12)
        return [*first, (await limiter.take("a", 10.0, 2)).allowed]

    assert asyncio.run(scenario()) == [True, True, False, True]


def test_memory_limiter_forgets_full_buckets_when_at_capacity() -> None:
    limiter = MemoryRateLimiter(max_buckets=10)

    async def fill() -> None:
        for i in range(25):
            await limiter.take(f"b{i}", 1000.0, 1)

    asyncio.run(fill())
    assert len(limiter._buckets) <= 10


def test_address_limit_answers_429_with_headers(
    registry: Registry, make_client: ClientFactory
) -> None:
    register_fake(registry, "alpha")
    with make_client(registry, rate_limit_address_rate=0.01, rate_limit_address_burst=2) as client:
        first = client.post("/predict", json=ONE)
        assert first.status_code == 200
        assert first.headers["ratelimit-limit"] == "2"
        assert first.headers["ratelimit-remaining"] == "1"
        assert client.post("/predict", json=ONE).headers["ratelimit-remaining"] == "0"
        limited = client.post("/predict", json=ONE)
        assert limited.status_code == 429
        assert limited.json()["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 90  # one token takes 100 s at 0.01/s
        assert limited.headers["ratelimit-remaining"] == "0"
        assert limited.headers["x-request-id"]
        # probes are never limited
        assert all(client.get("/health").status_code == 200 for _ in range(5))
        # the budget is spent before the key check, so guessing keys is slowed down too
        assert client.get("/admin/security").status_code == 429
        status = client.app.state.rate_limits  # type: ignore[attr-defined]
        assert status.limited == 2
        metrics = client.get("/metrics").text
        assert value(metrics, "berth_rate_limited_total", scope="address", protocol="http") == 2
        assert value(metrics, "berth_rate_limited_total", scope="key", protocol="http") == 0


def test_key_bucket_is_separate_from_the_address_bucket(
    registry: Registry, make_client: ClientFactory
) -> None:
    register_fake(registry, "alpha")
    store = KeyStore(default_keys_path(registry.root))
    _, token_a = store.create("a", "predict")
    _, token_b = store.create("b", "predict")
    with make_client(
        registry, rate_limit_key_rate=0.01, rate_limit_key_burst=1, rate_limit_address_rate=0
    ) as client:
        a = {"X-API-Key": token_a}
        b = {"X-API-Key": token_b}
        assert client.post("/predict", json=ONE, headers=a).status_code == 200
        assert client.post("/predict", json=ONE, headers=a).status_code == 429
        assert client.post("/predict", json=ONE, headers=b).status_code == 200
        # requests without a valid key are not limited by key (address rate is 0) but refused
        assert client.post("/predict", json=ONE).status_code == 401


@pytest.mark.parametrize(("policy", "status"), [("open", 200), ("closed", 503)])
def test_unreachable_redis_fails_open_or_closed_and_is_counted(
    registry: Registry,
    make_client: ClientFactory,
    policy: str,
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    register_fake(registry, "alpha")
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    with make_client(
        registry,
        rate_limit_address_rate=100,
        rate_limit_storage=nowhere,
        rate_limit_on_storage_error=policy,
    ) as client:
        started = time.perf_counter()
        answers = [client.post("/predict", json=ONE).status_code for _ in range(5)]
        elapsed = time.perf_counter() - started
        assert answers == [status] * 5
        assert elapsed < 2.0  # Redis is not retried on every request
        limits = client.app.state.rate_limits  # type: ignore[attr-defined]
        assert limits.limiter.storage_errors == 5
        assert limits.limited == 0
        assert value(client.get("/metrics").text, "berth_rate_limit_storage_errors_total") == 5
    assert any("rate-limit storage unreachable" in r.getMessage() for r in caplog.records)


@needs_redis
def test_redis_script_shares_one_bucket() -> None:
    assert REDIS_URL

    async def scenario() -> list[bool]:
        a, b = RedisRateLimiter(REDIS_URL), RedisRateLimiter(REDIS_URL)
        bucket = f"test:{time.time_ns()}"
        try:
            return [(await (a if i % 2 else b).take(bucket, 0.01, 3)).allowed for i in range(5)]
        finally:
            await a.close()
            await b.close()

    assert asyncio.run(scenario()) == [True, True, True, False, False]


@needs_redis
@pytest.mark.e2e
def test_two_server_processes_share_one_limit_through_redis(registry: Registry) -> None:
    assert REDIS_URL
    register_fake(registry, "alpha")
    _, token = KeyStore(default_keys_path(registry.root)).create("shared", "predict")
    env = {
        "BERTH_RATE_LIMIT_STORAGE": REDIS_URL,
        "BERTH_RATE_LIMIT_KEY_RATE": "0.01",
        "BERTH_RATE_LIMIT_KEY_BURST": "6",
    }
    headers = {"Authorization": f"Bearer {token}"}
    with (
        berth_server(registry.root, env=env) as one,
        berth_server(registry.root, env=env) as two,
    ):
        answers = [
            httpx.post(f"{server.url}/predict", json=ONE, headers=headers)
            for _ in range(5)
            for server in (one, two)
        ]
    codes = [r.status_code for r in answers]
    assert codes.count(200) == 6, codes
    assert codes.count(429) == 4, codes
    assert codes[:6] == [200] * 6
    assert all(int(r.headers["retry-after"]) >= 1 for r in answers[6:])
