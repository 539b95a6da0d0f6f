"""The predict fast path answers exactly as the full middleware stack does, outcome by outcome."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from berth.registry import Registry
from berth.security.keys import KeyStore, default_keys_path
from tests.conftest import ClientFactory
from tests.fakes import register_fake

ONE = {"features": [1.0, 2.0, 3.0]}
_VARYING = {"x-request-id", "date", "content-length"}

Call = Callable[[TestClient], Any]

SCENARIOS: dict[str, tuple[dict[str, Any], Call]] = {
    "default model": ({}, lambda c: c.post("/predict", json=ONE)),
    "named model": ({}, lambda c: c.post("/models/alpha/predict", json=ONE)),
    "version alias": ({}, lambda c: c.post("/models/alpha/versions/production/predict", json=ONE)),
    "batch": ({}, lambda c: c.post("/predict/batch", json={"instances": [ONE, ONE]})),
    "invalid input": ({}, lambda c: c.post("/predict", json={"features": [1.0]})),
    "malformed json": ({}, lambda c: c.post("/predict", content=b"{nope")),
    "unknown model": ({}, lambda c: c.post("/models/nope/predict", json=ONE)),
    "unknown version": ({}, lambda c: c.post("/models/alpha/versions/9/predict", json=ONE)),
    "body too large": (
        {"max_body_bytes": 1024},
        lambda c: c.post("/predict", json={**ONE, "pad": "x" * 2000}),
    ),
    "batch too large": (
        {"max_batch": 1},
        lambda c: c.post("/predict/batch", json={"instances": [ONE, ONE]}),
    ),
    "echoed request id": (
        {},
        lambda c: c.post("/predict", json=ONE, headers={"X-Request-ID": "abc-1"}),
    ),
    "no key": ({"keys": True}, lambda c: c.post("/predict", json=ONE)),
    "bad key": (
        {"keys": True},
        lambda c: c.post("/predict", json=ONE, headers={"X-API-Key": "bad"}),
    ),
    "key for another model": (
        {"keys": True},
        lambda c: c.post("/models/alpha/predict", json=ONE, headers=c.beta_key),  # type: ignore[attr-defined]
    ),
    "rate limited": (
        {"rate_limit_address_rate": 0.001, "rate_limit_address_burst": 1, "twice": True},
        lambda c: c.post("/predict", json=ONE),
    ),
    "timeout": (
        {"request_timeout_s": 0.05},
        lambda c: c.post("/models/slow/predict", json=ONE),
    ),
    "shed": ({"max_in_flight": 0, "shed_all": True}, lambda c: c.post("/predict", json=ONE)),
}


def _answer(
    registry: Registry,
    make_client: ClientFactory,
    fast_path: bool,
    options: dict[str, Any],
    call: Call,
    beta_key: str | None,
) -> tuple[int, dict[str, str], bytes]:
    options = dict(options)
    options.pop("keys", None)
    twice, shed_all = options.pop("twice", False), options.pop("shed_all", False)
    with make_client(
        registry,
        default_model="alpha",
        fast_path=fast_path,
        client=("203.0.113.9", 4000),
        **options,
    ) as client:
        assert (client.app.fast_path is not None) == fast_path  # type: ignore[attr-defined]
        if shed_all:
            client.app.state.guard.max_in_flight = 1  # type: ignore[attr-defined]
            client.app.state.guard.in_flight = 1  # type: ignore[attr-defined]
        client.beta_key = {"Authorization": f"Bearer {beta_key}"}  # type: ignore[attr-defined]
        if twice:
            call(client)
        response = call(client)
    headers = {k: v for k, v in response.headers.items() if k not in _VARYING}
    body = response.content
    if b"request_id" in body:  # the answer names the request id, which differs per request
        body = body.replace(response.headers["x-request-id"].encode(), b"<id>")
    return response.status_code, headers, body


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_fast_path_answers_like_the_middleware_stack(
    registry: Registry, make_client: ClientFactory, scenario: str
) -> None:
    register_fake(registry, "alpha")
    register_fake(registry, "beta")
    register_fake(registry, "slow", behaviour="slow", delay_s="0.5")
    options, call = SCENARIOS[scenario]
    beta_key = None
    if options.get("keys"):
        store = KeyStore(default_keys_path(registry.root), check_interval_s=0)
        _, beta_key = store.create(name="beta-only", scope="predict", model="beta")
    fast = _answer(registry, make_client, True, options, call, beta_key)
    slow = _answer(registry, make_client, False, options, call, beta_key)
    assert fast == slow
    if scenario == "echoed request id":  # the body's request id is the header's
        assert b'"request_id":"<id>"' in fast[2]


def test_fast_path_is_off_with_cors(registry: Registry, make_client: ClientFactory) -> None:
    register_fake(registry, "alpha")
    with make_client(registry, cors_origins=["https://app.example"]) as client:
        answer = client.post("/predict", json=ONE, headers={"Origin": "https://app.example"})
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "https://app.example"
        assert client.app.fast_path is None  # type: ignore[attr-defined]
