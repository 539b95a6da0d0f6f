"""Pure routing functions: weights, sticky hashing with minimal movement, validation."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from pydantic import ValidationError

from berth.errors import InvalidInput
from berth.router import Route, choose_variant, parse_weights, should_shadow


def test_parse_weights() -> None:
    assert parse_weights(["production=90", "canary=10"]) == {"production": 90, "canary": 10}
    assert parse_weights(["3=1"]) == {"3": 1}
    for bad in ("production", "=5", "canary=ten", "canary=-1"):
        with pytest.raises(InvalidInput, match="expected TARGET=WEIGHT"):
            parse_weights([bad])


def test_route_validation() -> None:
    with pytest.raises(ValidationError, match="at least one target"):
        Route(weights={})
    with pytest.raises(ValidationError, match="at least one weight must be positive"):
        Route(weights={"a": 0})
    with pytest.raises(ValidationError, match="primary 'c' is not one of"):
        Route(weights={"a": 1}, primary="c")
    route = Route(weights={"production": 90, "canary": 10}, shadow="staging", shadow_fraction=0.25)
    assert route.primary_target == "production"
    assert route.describe() == "production=90 canary=10 shadow=staging@0.25"


def test_random_choice_follows_weights() -> None:
    rng = random.Random(1)
    counts = Counter(choose_variant({"a": 90, "b": 10, "off": 0}, None, rng) for _ in range(20_000))
    assert counts["off"] == 0
    assert abs(counts["b"] / 20_000 - 0.10) < 0.01  # 3 standard deviations is about 0.0064


def test_sticky_choice_follows_weights_and_is_stable() -> None:
    keys = [f"user-{i}" for i in range(20_000)]
    weights = {"a": 70, "b": 20, "c": 10}
    chosen = {k: choose_variant(weights, k) for k in keys}
    shares = Counter(chosen.values())
    for target, weight in weights.items():
        assert abs(shares[target] / len(keys) - weight / 100) < 0.015
    assert all(choose_variant(weights, k) == chosen[k] for k in keys[:2000])


def test_changing_a_weight_moves_only_the_share_it_must() -> None:
    keys = [f"user-{i}" for i in range(20_000)]
    before = {k: choose_variant({"production": 90, "canary": 10}, k) for k in keys}
    after = {k: choose_variant({"production": 80, "canary": 20}, k) for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(
        before[k] == "production" and after[k] == "canary" for k in moved
    )  # one direction only
    assert abs(len(moved) / len(keys) - 0.10) < 0.015  # about the 10 points that changed hands
    # a third variant takes its share from both, and nobody moves between the first two
    third = {k: choose_variant({"production": 80, "canary": 20, "b": 25}, k) for k in keys}
    assert all(third[k] in (after[k], "b") for k in keys)


def test_should_shadow_samples_the_fraction() -> None:
    rng = random.Random(2)
    route = Route(weights={"production": 1}, shadow="canary", shadow_fraction=0.3)
    assert abs(sum(should_shadow(route, rng) for _ in range(10_000)) / 10_000 - 0.3) < 0.02
    assert not should_shadow(Route(weights={"production": 1}))
