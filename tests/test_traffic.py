"""Traffic management through the API: routes, pins, stickiness, shadow, promotion, rollback, feedback."""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from berth.registry import Registry
from tests.conftest import ClientFactory
from tests.fakes import register_fake

ROW = {"features": [1.0, 2.0, 3.0]}


def _versions(client: TestClient, n: int, **kwargs: Any) -> Counter[int]:
    counts: Counter[int] = Counter()
    for _ in range(n):
        response = client.post("/models/m/predict", json=ROW, **kwargs)
        assert response.status_code == 200, response.text
        assert response.headers["x-berth-version"] == str(response.json()["version"])
        counts[response.json()["version"]] += 1
    return counts


def _wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture
def two_versions(registry: Registry) -> Registry:
    register_fake(registry, "m", "sum")  # version 1, production
    register_fake(registry, "m", "sum", alias="canary")  # version 2
    return registry


def test_weights_are_honoured(two_versions: Registry, make_client: ClientFactory) -> None:
    with make_client(two_versions) as client:
        assert _versions(client, 20) == {1: 20}
        put = client.put("/models/m/route", json={"weights": {"production": 80, "canary": 20}})
        assert put.status_code == 200, put.text
        assert put.json()["serving"] == {"default": 1, "production": 1, "canary": 2}
        counts = _versions(client, 1500)
        assert abs(counts[2] / 1500 - 0.20) < 0.035  # 3.4 standard deviations
        variant = client.post("/models/m/predict", json=ROW).headers["x-berth-variant"]
        assert variant in {"production", "canary"}
    assert two_versions.route("m") == {
        "weights": {"production": 80, "canary": 20},
        "shadow_fraction": 1.0,
    }


def test_pins_win_over_the_route(two_versions: Registry, make_client: ClientFactory) -> None:
    two_versions.set_route("m", {"weights": {"canary": 100}})
    with make_client(two_versions) as client:
        assert _versions(client, 10) == {2: 10}
        assert _versions(client, 10, headers={"X-Berth-Version": "1"}) == {1: 10}
        assert _versions(client, 10, headers={"X-Berth-Version": "production"}) == {1: 10}
        pinned = client.post(
            "/models/m/versions/1/predict", json=ROW, headers={"X-Berth-Version": "2"}
        )
        assert pinned.json()["version"] == 1  # the path is more specific than the header
        assert "x-berth-variant" not in pinned.headers
        missing = client.post("/models/m/predict", json=ROW, headers={"X-Berth-Version": "9"})
        assert missing.status_code == 404


def test_sticky_keys_by_header_and_body_field(
    two_versions: Registry, make_client: ClientFactory
) -> None:
    two_versions.set_route(
        "m", {"weights": {"production": 50, "canary": 50}, "sticky_field": "user_id"}
    )
    with make_client(two_versions) as client:
        for user in ("alice", "bob", "carol", "dave"):
            by_header = _versions(client, 15, headers={"X-Berth-Key": user})
            by_body = Counter(
                client.post("/models/m/predict", json={**ROW, "user_id": user}).json()["version"]
                for _ in range(15)
            )
            assert len(by_header) == 1
            assert by_body == by_header  # same key, same variant, whichever way it arrives
        users = {
            client.post("/models/m/predict", json={**ROW, "user_id": f"u{i}"}).json()["version"]
            for i in range(40)
        }
        assert users == {1, 2}


def test_shadow_records_agreement_without_touching_the_answer(
    registry: Registry, make_client: ClientFactory
) -> None:
    register_fake(registry, "m", "sum")
    register_fake(registry, "m", "slow", alias="candidate", delay_s="0.3")
    registry.set_route("m", {"weights": {"production": 100}, "shadow": "candidate"})
    with make_client(registry) as client:
        started = time.perf_counter()
        answers = [client.post("/models/m/predict", json=ROW).json() for _ in range(5)]
        elapsed = time.perf_counter() - started
        assert {a["version"] for a in answers} == {1}
        assert {a["prediction"] for a in answers} == {6.0}
        assert elapsed < 1.2  # five answers did not wait for five 0.3 s shadow predictions
        _wait_for(
            lambda: (
                client.get("/models/m/experiment")
                .json()["variants"]
                .get("shadow:candidate", {})
                .get("shadow", {})
                .get("compared")
                == 5
            )
        )
        shadow = client.get("/models/m/experiment").json()["variants"]["shadow:candidate"]["shadow"]
        assert shadow["agreement"] == 1.0
        assert shadow["latency_p50_ms"] >= 300


def test_a_broken_candidate_is_never_served(
    two_versions: Registry, make_client: ClientFactory
) -> None:
    register_fake(two_versions, "m", "sum", alias="broken")  # version 3, then tampered
    (two_versions.path("m", 3) / "fake.bin").write_bytes(b"tampered")
    with make_client(two_versions, refresh_interval_s=0.1) as client:
        refused = client.put("/models/m/route", json={"weights": {"production": 50, "broken": 50}})
        assert refused.status_code == 500
        assert refused.json()["code"] == "checksum_mismatch"
        assert two_versions.route("m") is None  # nothing was stored
        two_versions.set_alias("m", "production", 3)  # behind the server's back
        _wait_for(
            lambda: any(
                e["event"] == "refresh_failed"
                for e in client.get("/models/m/route").json()["events"]
            )
        )
        assert _versions(client, 20) == {1: 20}
        event = next(
            e
            for e in client.get("/models/m/route").json()["events"]
            if e["event"] == "refresh_failed"
        )
        assert "sha256 of fake.bin" in event["message"]
        assert "still serving" in event["message"]
        metrics = client.get("/metrics").text
        assert re.search(
            r'berth_traffic_events_total\{event="refresh_failed",model="m"\} [1-9]', metrics
        )


def test_promotion_and_rollback_switch_versions(
    two_versions: Registry, make_client: ClientFactory
) -> None:
    with make_client(two_versions, refresh_interval_s=0.1) as client:
        assert _versions(client, 5) == {1: 5}
        two_versions.set_alias("m", "production", 2)
        _wait_for(lambda: client.post("/models/m/predict", json=ROW).json()["version"] == 2)
        assert _versions(client, 10) == {2: 10}
        assert client.get("/models/m").json()["version"] == 2
        two_versions.rollback("m", "production")
        _wait_for(lambda: client.post("/models/m/predict", json=ROW).json()["version"] == 1)
        loaded = {c["version"] for c in client.get("/ready").json()["models"]}
        assert loaded == {1}


def test_auto_rollback_zeroes_a_failing_canary(
    registry: Registry, make_client: ClientFactory
) -> None:
    register_fake(registry, "m", "sum")
    register_fake(registry, "m", "failing", alias="canary")
    policy = {"min_requests": 10, "window_s": 60, "max_error_rate_delta": 0.2}
    registry.set_route("m", {"weights": {"production": 50, "canary": 50}, "auto_rollback": policy})
    with make_client(registry) as client:
        statuses = Counter(
            client.post("/models/m/predict", json=ROW).status_code for _ in range(80)
        )
        assert statuses[500] >= 10  # the canary failed before it was caught
        assert statuses[500] < 40
        after = Counter(client.post("/models/m/predict", json=ROW).status_code for _ in range(40))
        assert after == {200: 40}
        events = client.get("/models/m/route").json()["events"]
        assert any(
            e["event"] == "auto_rollback" and "canary weight set to 0" in e["message"]
            for e in events
        )
        metrics = client.get("/metrics").text
        assert 'berth_traffic_events_total{event="auto_rollback",model="m"} 1.0' in metrics
    stored = registry.route("m")
    assert stored is not None
    assert stored["weights"] == {"production": 50, "canary": 0}


@pytest.fixture(params=["access log at info", "access log quiet"])
def access_log_level(request: pytest.FixtureRequest) -> Iterator[None]:
    """Both ways the access logger can be set: at info (as `berth serve` sets it), the access line
    carries each prediction's outcome; otherwise the data plane logs a line of its own. Variant
    statistics must be recorded either way."""
    logger = logging.getLogger("berth.access")
    before = logger.level
    logger.setLevel(logging.INFO if request.param == "access log at info" else logging.WARNING)
    yield
    logger.setLevel(before)


@pytest.mark.usefixtures("access_log_level")
def test_experiment_report_with_feedback(registry: Registry, make_client: ClientFactory) -> None:
    register_fake(registry, "m", "parity")
    register_fake(registry, "m", "parity", alias="b")
    registry.set_route("m", {"weights": {"production": 50, "b": 50}})
    with make_client(registry) as client:
        for i in range(60):
            response = client.post("/models/m/predict", json={"features": [float(i), 0.0, 0.0]})
            truth = "even" if i % 2 == 0 else "odd"
            if response.headers["x-berth-variant"] == "b":
                truth = "odd"  # variant b is "wrong" on every even input
            fed = client.post(
                "/feedback", json={"request_id": response.json()["request_id"], "label": truth}
            )
            assert fed.status_code == 200
            assert fed.json()["variant"] == response.headers["x-berth-variant"]
        report = client.get("/models/m/experiment").json()
        unknown = client.post("/feedback", json={"request_id": "nope", "label": "odd"})
        no_truth = client.post("/feedback", json={"request_id": "nope"})
    assert report["route"] == "production=50 b=50"
    production, b = report["variants"]["production"], report["variants"]["b"]
    assert production["feedback"]["accuracy"] == 1.0
    assert 0.2 < b["feedback"]["accuracy"] < 0.8
    assert production["requests"] + b["requests"] == 60
    assert set(production["label_distribution"]) == {"even", "odd"}
    comparison = report["comparison"]
    assert comparison["test"] == "two-proportion z-test on accuracy"
    assert comparison["p_value"] < 0.05
    assert "caveat" in comparison
    assert unknown.status_code == 404
    assert no_truth.status_code == 422


def test_route_api_errors(two_versions: Registry, make_client: ClientFactory) -> None:
    with make_client(two_versions) as client:
        bad = client.put("/models/m/route", json={"weights": {}})
        assert bad.status_code == 422
        assert "at least one target" in bad.json()["error"]
        unknown = client.put("/models/m/route", json={"weights": {"staging": 1}})
        assert unknown.status_code == 404
        assert "no alias 'staging'" in unknown.json()["error"]
        assert client.get("/models/ghost/route").status_code == 404
        assert client.delete("/models/m/route").json()["route"] is None
