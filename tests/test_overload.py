"""Overload and faults on real servers: 503 beyond the in-flight bound, 504 after the timeout,
health answering while saturated, security headers, and SIGTERM under load losing nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import httpx
import pytest

from berth.registry import Registry
from tests.conftest import ClientFactory
from tests.fakes import register_fake
from tests.servers import berth_server
from tests.test_metrics import value

ONE = {"features": [1.0, 2.0, 3.0]}


async def _burst(url: str, n: int) -> list[tuple[int, float, httpx.Response]]:
    async with httpx.AsyncClient(timeout=10) as client:

        async def one() -> tuple[int, float, httpx.Response]:
            started = time.perf_counter()
            response = await client.post(f"{url}/predict", json=ONE)
            return response.status_code, time.perf_counter() - started, response

        return await asyncio.gather(*(one() for _ in range(n)))


@pytest.mark.e2e
def test_beyond_max_in_flight_answers_503_at_once_and_health_still_answers(
    registry: Registry,
) -> None:
    register_fake(registry, "slow", behaviour="slow", delay_s="0.6")
    env = {"BERTH_MAX_IN_FLIGHT": "4", "BERTH_PREDICT_THREADS": "4"}
    with berth_server(registry.root, env=env) as server:

        async def scenario() -> tuple[list[tuple[int, float, httpx.Response]], float, int]:
            load = asyncio.ensure_future(_burst(server.url, 10))
            await asyncio.sleep(0.3)  # the four admitted requests are inside the model now
            async with httpx.AsyncClient() as probe:
                started = time.perf_counter()
                health = await probe.get(f"{server.url}/health")
                health_s = time.perf_counter() - started
            return await load, health_s, health.status_code

        results, health_s, health_status = asyncio.run(scenario())
        status = httpx.get(f"{server.url}/admin/security").json()["load"]
        metrics = httpx.get(f"{server.url}/metrics").text
    codes = sorted(code for code, _, _ in results)
    assert codes == [200] * 4 + [503] * 6
    shed = [(elapsed, r) for code, elapsed, r in results if code == 503]
    assert all(elapsed < 0.5 for elapsed, _ in shed)  # refused at once, not after queueing
    assert all(r.headers["retry-after"] == "1" for _, r in shed)
    assert shed[0][1].json()["code"] == "overloaded"
    assert health_status == 200
    assert health_s < 0.2
    assert status["shed"] == 6
    assert value(metrics, "berth_requests_shed_total") == 6
    assert status["in_flight"] == 1  # the status request itself


@pytest.mark.e2e
def test_request_timeout_answers_504(registry: Registry) -> None:
    register_fake(registry, "slow", behaviour="slow", delay_s="3.0")
    with berth_server(registry.root, env={"BERTH_REQUEST_TIMEOUT_S": "0.3"}) as server:
        started = time.perf_counter()
        response = httpx.post(f"{server.url}/predict", json=ONE, timeout=5)
        elapsed = time.perf_counter() - started
        status = httpx.get(f"{server.url}/admin/security").json()["load"]
        metrics = httpx.get(f"{server.url}/metrics").text
    assert response.status_code == 504
    assert response.json() == {
        "error": "request took longer than 0.3 s (BERTH_REQUEST_TIMEOUT_S)",
        "code": "timeout",
    }
    assert 0.25 < elapsed < 2.5  # well before the model's 3 s (loose: a busy CI machine)
    assert status["timeouts"] == 1
    assert value(metrics, "berth_request_timeouts_total") == 1


def test_security_headers(registry: Registry, make_client: ClientFactory) -> None:
    register_fake(registry, "alpha")
    with make_client(registry) as client:
        api = client.post("/predict", json=ONE)
        docs = client.get("/docs")
        error = client.post("/predict", content=b"{")
    for response in (api, docs, error):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "strict-transport-security" not in response.headers  # plain HTTP
    assert api.headers["content-security-policy"].startswith("default-src 'none'")
    assert api.headers["cache-control"] == "no-store"
    assert "content-security-policy" not in docs.headers  # Swagger UI loads its scripts
    assert error.status_code == 400


def test_cors_stays_explicit(registry: Registry, make_client: ClientFactory) -> None:
    register_fake(registry, "alpha")
    with make_client(registry) as client:
        assert (
            "access-control-allow-origin"
            not in client.post(
                "/predict", json=ONE, headers={"Origin": "https://evil.example"}
            ).headers
        )
    with make_client(registry, cors_origins=["https://app.example"]) as client:
        allowed = client.post("/predict", json=ONE, headers={"Origin": "https://app.example"})
        other = client.post("/predict", json=ONE, headers={"Origin": "https://evil.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers


@dataclass
class Outcome:
    started: float
    ended: float
    status: int | None
    error: str | None


def _logged_at(log: str, message: str) -> float:
    """When the server first logged `message` (epoch seconds, from its JSON log)."""
    for line in log.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record["message"] == message:
                return datetime.fromisoformat(record["ts"]).timestamp()
    raise AssertionError(f"{message!r} not in the server log:\n{log}")


@dataclass
class Probe:
    """GETs on new connections that note when their TCP connect began (httpcore's trace)."""

    client: httpx.Client
    connecting: float | None = None

    def status(self, url: str) -> int | None:
        def trace(event: str, info: object) -> None:
            if event == "connection.connect_tcp.started":
                self.connecting = time.time()

        try:
            return self.client.get(url, extensions={"trace": trace}).status_code
        except httpx.ConnectError:
            return None


def _worker_pids(log: str) -> list[int]:
    return [
        record["pid"]
        for record in map(json.loads, filter(lambda line: line.startswith("{"), log.splitlines()))
        if record["message"] == "worker started"
    ]


@pytest.mark.e2e
@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_under_load_loses_no_accepted_request(registry: Registry, workers: str) -> None:
    register_fake(registry, "slow", behaviour="slow", delay_s="0.15")
    env = {"BERTH_PREDICT_THREADS": "8"}
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    args = ("--shutdown-grace", "2", "--workers", workers)
    # the probe's client is made before: making one takes long on a loaded machine
    with berth_server(registry.root, *args, env=env) as server, httpx.Client() as client:
        probe = Probe(client)

        def client_loop() -> None:
            with httpx.Client(timeout=10) as client:
                while True:
                    started = time.time()
                    try:
                        status, error = (
                            client.post(f"{server.url}/predict", json=ONE).status_code,
                            None,
                        )
                    except httpx.HTTPError as exc:
                        status, error = None, type(exc).__name__
                    with lock:
                        outcomes.append(Outcome(started, time.time(), status, error))
                    if error == "ConnectError":
                        return

        threads = [threading.Thread(target=client_loop) for _ in range(6)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while len(outcomes) < 12 and time.monotonic() < deadline:  # a busy machine is slower
            time.sleep(0.1)
        signalled = time.time()
        server.process.send_signal(signal.SIGTERM)
        for pid in _worker_pids(server.log()):  # as from a terminal: the whole group gets it
            os.kill(pid, signal.SIGINT)
        time.sleep(0.3)
        ready = probe.status(f"{server.url}/ready")  # a new connection, in the grace period
        exit_code = server.process.wait(timeout=20)
        for thread in threads:
            thread.join(timeout=20)
        log = server.log()

    closed = _logged_at(log, "grace period over: closing the listener")
    before = [o for o in outcomes if o.started < signalled]
    after = [o for o in outcomes if o.started >= signalled]
    assert len(before) > 10
    assert all(o.status == 200 for o in before), [o for o in before if o.status != 200]
    assert probe.connecting is not None
    if probe.connecting < closed:
        assert ready == 503
    else:  # the probe could only connect after the grace period (a starved test process)
        assert ready is None, (probe.connecting - signalled, closed - signalled)
    assert "readiness is false" in log
    assert closed - signalled > 1.99  # open for the whole grace period (log: milliseconds)
    assert any(o.status == 200 for o in after)  # new connections were served during it
    failed = [o for o in after if o.status != 200]
    # Every connection the server accepted was answered: the only failures are refused
    # connections, and none was refused before the listener closed.
    assert all(o.error == "ConnectError" for o in failed), [
        (round(o.started - signalled, 3), round(o.ended - signalled, 3), o.error) for o in failed
    ]
    assert all(o.ended >= closed for o in failed), (closed - signalled, failed)
    assert exit_code in (0, -signal.SIGTERM)
