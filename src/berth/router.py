"""Routes: weights over versions or aliases, sticky keys, shadow targets. Pure functions, no I/O.

Sticky assignment uses weighted rendezvous hashing: each (key, variant) pair gets a score
`weight / -ln(u)`, with `u` uniform in (0, 1) from a hash of the pair, and the highest score wins.
A key keeps its variant as long as that variant's weight does not fall relative to the others, so
changing a weight moves only the share of keys it must.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from berth.errors import InvalidInput

__all__ = ["AutoRollback", "Route", "choose_variant", "parse_weights", "should_shadow"]


class AutoRollback(BaseModel):
    """Send a canary's weight to zero when it does clearly worse than the primary."""

    model_config = ConfigDict(frozen=True)

    window_s: float = Field(default=60.0, gt=0)
    """Sliding window the error rates and latencies are computed over."""
    min_requests: int = Field(default=50, ge=1)
    """Requests a variant needs in the window before it is judged."""
    max_error_rate_delta: float = Field(default=0.05, ge=0)
    """Roll back when canary error rate exceeds the primary's by more than this (0.05 = 5 points)."""
    max_p99_ratio: float = Field(default=2.0, gt=1)
    """Roll back when canary p99 latency exceeds the primary's by more than this factor."""


class Route(BaseModel):
    """How requests that name no version are spread over a model's versions."""

    model_config = ConfigDict(frozen=True)

    weights: dict[str, Annotated[int, Field(ge=0)]]
    """Target (a version number or an alias) -> relative weight."""
    primary: str | None = None
    """The target auto-rollback compares against and returns traffic to (default: the heaviest)."""
    sticky_field: str | None = None
    """A top-level request-body field whose value is the routing key (X-Berth-Key also works)."""
    shadow: str | None = None
    """A target that receives a mirrored copy of sampled traffic; its answers are only recorded."""
    shadow_fraction: float = Field(default=1.0, ge=0, le=1)
    """Share of requests mirrored to the shadow target."""
    auto_rollback: AutoRollback | None = None

    @model_validator(mode="after")
    def _check(self) -> Route:
        if not self.weights:
            raise ValueError("a route needs at least one target")
        if sum(self.weights.values()) <= 0:
            raise ValueError("at least one weight must be positive")
        if self.primary is not None and self.primary not in self.weights:
            raise ValueError(f"primary {self.primary!r} is not one of the route's targets")
        return self

    @property
    def primary_target(self) -> str:
        return self.primary or max(self.weights, key=lambda t: (self.weights[t], t))

    def describe(self) -> str:
        parts = " ".join(f"{t}={w}" for t, w in self.weights.items())
        if self.shadow:
            parts += f" shadow={self.shadow}@{self.shadow_fraction:g}"
        return parts


def parse_weights(items: list[str] | tuple[str, ...]) -> dict[str, int]:
    """`["production=90", "canary=10"]` -> `{"production": 90, "canary": 10}`."""
    weights: dict[str, int] = {}
    for item in items:
        target, sep, weight = item.partition("=")
        if not sep or not target or not weight.strip().isdigit():
            raise InvalidInput(f"expected TARGET=WEIGHT (e.g. production=90), got {item!r}")
        weights[target.strip()] = int(weight)
    return weights


def _unit(key: str, target: str) -> float:
    digest = hashlib.blake2b(f"{key}\x00{target}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2**64


def choose_variant(
    weights: dict[str, int], key: str | None, rng: random.Random | None = None
) -> str:
    """The target for one request: by weighted rendezvous hashing of `key`, or at random without one."""
    live = {t: w for t, w in weights.items() if w > 0}
    if key is None:
        targets = list(live)
        return (rng or random).choices(targets, weights=[live[t] for t in targets])[0]
    return max(live, key=lambda t: live[t] / -math.log(_unit(key, t)))


def should_shadow(route: Route, rng: random.Random | None = None) -> bool:
    return route.shadow is not None and (rng or random).random() < route.shadow_fraction
