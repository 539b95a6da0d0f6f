"""`berth serve --workers 2` end to end: one port, two processes, each batching on its own."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import orjson
import pytest

from berth.registry import Registry
from tests.servers import berth_server

pytestmark = pytest.mark.e2e


async def _fire(url: str, n: int) -> list[httpx.Response]:
    # A fresh connection per request, so that the kernel hands them to whichever worker accepts.
    async def one(i: int) -> httpx.Response:
        async with httpx.AsyncClient(timeout=30) as client:
            return await client.post(url, json={"text": f"I want to cancel order {i}"})

    return await asyncio.gather(*(one(i) for i in range(n)))


def test_two_workers_share_one_port_and_both_serve(examples_registry: Registry) -> None:
    with berth_server(examples_registry.root, "intent", "--workers", "2") as server:
        responses = asyncio.run(_fire(f"{server.url}/predict", 120))
        assert [r.status_code for r in responses] == [200] * 120
        assert {r.json()["prediction"] for r in responses} == {"complaint"}
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
        records = [orjson.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    started = {r["pid"] for r in records if r["message"] == "worker started"}
    stats = [r for r in records if r["message"] == "batching stats"]
    assert len(started) == 2
    assert server.process.pid not in started
    assert {s["pid"] for s in stats} == started, server.log()  # both workers served requests
    assert sum(s["requests"] for s in stats) >= 120
    assert max(s["largest_rows"] for s in stats) > 1  # concurrent requests were merged


def test_a_worker_that_dies_is_replaced(examples_registry: Registry) -> None:
    with berth_server(examples_registry.root, "regression", "--workers", "2") as server:
        records = [orjson.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        first = [r["pid"] for r in records if r["message"] == "worker started"]
        os.kill(first[0], signal.SIGKILL)
        for _ in range(100):
            log = server.log()
            if "worker exited; starting another" in log and log.count('"worker started"') == 3:
                break
            asyncio.run(asyncio.sleep(0.1))
        assert log.count('"worker started"') == 3
        for _ in range(10):  # whichever worker answers
            response = httpx.post(f"{server.url}/predict", json={"features": [0.01] * 10})
            assert response.status_code == 200
            assert isinstance(response.json()["prediction"], float)
