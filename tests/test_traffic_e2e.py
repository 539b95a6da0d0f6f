"""Traffic management on real `berth serve` processes with concurrent clients."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from berth.cli.main import cli
from berth.registry import Registry
from tests.fakes import register_fake
from tests.servers import berth_server

ROW = {"features": [1.0, 2.0, 3.0]}
FAST = {"BERTH_REFRESH_INTERVAL_S": "0.2"}


def _hammer(url: str, stop: threading.Event, results: list[tuple[int, int | None]]) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            response = client.post("/models/m/predict", json=ROW)
            version = response.json().get("version") if response.status_code == 200 else None
            results.append((response.status_code, version))


@pytest.mark.e2e
def test_promotion_under_load_drops_nothing(registry: Registry) -> None:
    register_fake(registry, "m", "sum")
    register_fake(registry, "m", "slow", alias="next", delay_s="0.02")
    with berth_server(registry.root, "m", env=FAST) as server:
        stop = threading.Event()
        results: list[tuple[int, int | None]] = []
        clients = [
            threading.Thread(target=_hammer, args=(server.url, stop, results)) for _ in range(8)
        ]
        for thread in clients:
            thread.start()
        time.sleep(1.0)
        promoted = CliRunner().invoke(
            cli, ["--registry", str(registry.root), "models", "promote", "m", "2"]
        )
        assert promoted.exit_code == 0, promoted.output
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(v == 2 for _, v in results[-20:]):
            time.sleep(0.1)
        time.sleep(1.0)
        stop.set()
        for thread in clients:
            thread.join()
    log = server.log()  # complete once the server has shut down
    statuses = Counter(status for status, _ in results)
    assert statuses == {200: len(results)}, statuses  # zero failed requests across the switch
    versions = [v for _, v in results]
    assert versions[0] == 1
    assert versions[-1] == 2
    switch = versions.index(2)
    assert set(versions[switch + 40 :]) == {
        2
    }  # after the switch (and in-flight stragglers) only v2
    assert '"message":"model unloaded","model":"m","version":1' in log


@pytest.mark.e2e
def test_two_servers_sharing_a_registry_agree_on_routes(registry: Registry) -> None:
    register_fake(registry, "m", "sum")
    register_fake(registry, "m", "sum", alias="canary")
    with (
        berth_server(registry.root, "m", env=FAST) as one,
        berth_server(registry.root, "m", env=FAST) as two,
    ):
        result = CliRunner().invoke(
            cli,
            [
                "--registry",
                str(registry.root),
                "routes",
                "set",
                "m",
                "production=50",
                "canary=50",
                "--sticky-field",
                "user",
            ],
        )
        assert result.exit_code == 0, result.output
        assert "route production=50 canary=50" in result.output
        with httpx.Client(timeout=10) as client:

            def version(url: str, user: str) -> int:
                return int(
                    client.post(f"{url}/models/m/predict", json={**ROW, "user": user}).json()[
                        "version"
                    ]
                )

            deadline = time.monotonic() + 10
            while client.get(f"{two.url}/models/m/route").json()["route"] is None:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            while client.get(f"{one.url}/models/m/route").json()["route"] is None:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            users = [f"user-{i}" for i in range(60)]
            on_one = {u: version(one.url, u) for u in users}
            on_two = {u: version(two.url, u) for u in users}
    assert on_one == on_two  # the same key lands on the same version, whichever server answers
    assert set(on_one.values()) == {1, 2}


@pytest.mark.e2e
def test_routes_cli_refuses_a_broken_target(registry: Registry, tmp_path: Path) -> None:
    register_fake(registry, "m", "sum")
    register_fake(registry, "m", "sum", alias="bad")
    (registry.path("m", 2) / "fake.bin").write_bytes(b"tampered")

    def berth(*args: str) -> str:
        return CliRunner().invoke(cli, ["--registry", str(registry.root), *args]).output

    assert "sha256 of fake.bin" in berth("routes", "set", "m", "production=90", "bad=10")
    assert registry.route("m") is None
    assert "sha256 of fake.bin" in berth("models", "promote", "m", "2")
    assert registry.aliases("m")["production"] == 1
    assert "has no route" in berth("routes", "show", "m")
    berth("routes", "set", "m", "production=90", "bad=10", "--no-check")
    assert '"bad": 2' in berth("routes", "show", "m")
    assert "route cleared" in berth("routes", "clear", "m")
    assert registry.route("m") is None


@pytest.mark.e2e
def test_weights_hold_under_concurrent_clients(registry: Registry) -> None:
    register_fake(registry, "m", "sum")
    register_fake(registry, "m", "sum", alias="canary")
    registry.set_route("m", {"weights": {"production": 75, "canary": 25}})
    counts: Counter[int] = Counter()
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def client_loop() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(250):
                response = client.post("/models/m/predict", json=ROW)
                with lock:
                    statuses[response.status_code] += 1
                    counts[response.json().get("version", 0)] += 1

    with berth_server(registry.root, "m") as server:
        threads = [threading.Thread(target=client_loop) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses == {200: 2000}
    share = counts[2] / 2000
    assert abs(share - 0.25) < 0.03  # about 3 standard deviations (0.0097) either side
