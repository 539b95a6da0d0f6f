"""Batching seen through the HTTP API: merged requests, and 503 with Retry-After when the queue is full."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from berth.registry import Registry
from tests.conftest import ClientFactory
from tests.fakes import FakeModel, register_fake


def test_a_full_queue_answers_503_with_retry_after(
    registry: Registry, make_client: ClientFactory
) -> None:
    register_fake(registry, "slow", behaviour="slow", delay_s="2.0")
    with (
        make_client(registry, models=["slow"], batch_queue_rows=1) as client,
        ThreadPoolExecutor(3) as pool,
    ):

        def post() -> Any:
            return client.post("/predict", json={"features": [1.0, 2.0, 3.0]})

        FakeModel.calls.clear()
        running = pool.submit(post)
        deadline = time.monotonic() + 20
        while not FakeModel.calls:  # the first batch is computing (for 2 s)
            assert time.monotonic() < deadline
            time.sleep(0.01)
        later = [pool.submit(post), pool.submit(post)]  # one waits in the queue, one finds it full
        statuses = sorted(f.result().status_code for f in later)
        assert running.result().status_code == 200
    assert statuses == [200, 503]
    refused_response = next(f.result() for f in later if f.result().status_code == 503)
    assert refused_response.headers["retry-after"] == "1"
    assert refused_response.json() == {
        "error": "the batch queue is full (1 rows waiting): retry shortly",
        "code": "overloaded",
    }


def test_concurrent_requests_share_predict_calls(
    registry: Registry, make_client: ClientFactory
) -> None:
    register_fake(registry, "slow", behaviour="slow", delay_s="0.3")
    with make_client(registry, models=["slow"]) as client, ThreadPoolExecutor(8) as pool:
        FakeModel.calls.clear()
        responses = list(
            pool.map(
                lambda i: client.post("/predict", json={"features": [float(i), 0.0, 0.0]}),
                range(8),
            )
        )
    assert [r.json()["prediction"] for r in responses] == [float(i) for i in range(8)]
    assert sum(FakeModel.calls) == 8
    assert len(FakeModel.calls) < 8  # at least some requests were merged
