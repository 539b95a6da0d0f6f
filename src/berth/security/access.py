"""Who may call what: each route's required scope, and the decision for one caller.

Protocol-neutral: the REST middleware passes a path, the gRPC interceptor will pass its own
requirement; both call `authorize`.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from berth.errors import Forbidden, Unauthorized
from berth.security.keys import ApiKey, KeyStore

__all__ = ["Requirement", "authorize", "is_loopback", "requirement_for"]

Need = Literal["public", "predict", "admin"]

# Inference and model metadata (simple JSON, V1 and V2), and feedback. Every path not listed here
# (and not public) needs an admin key: traffic routes, experiments, the V2 repository extension,
# and any route added later until someone decides otherwise.
_PREDICT = [
    re.compile(p)
    for p in (
        r"^/predict(?:/batch)?$",
        r"^/model/info$",
        r"^/models$",
        r"^/models/(?P<model>[^/]+)(?:/versions/[^/]+)?(?:/predict(?:/batch)?)?$",
        r"^/feedback$",
        r"^/v2(?:/models)?$",
        r"^/v2/models/(?P<model>[^/]+)(?:/versions/[^/]+)?(?:/ready|/infer)?$",
        r"^/v1/models$",
        r"^/v1/models/(?P<model>[^/:]+)(?:/versions/[^/:]+)?(?::predict)?$",
    )
]


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a route needs: nothing, a predict key (for `model`, when the path names one), or admin."""

    need: Need
    model: str | None = None


def requirement_for(path: str, public_paths: frozenset[str]) -> Requirement:
    if path in public_paths:
        return Requirement("public")
    for pattern in _PREDICT:
        match = pattern.match(path)
        if match:
            return Requirement("predict", match.groupdict().get("model"))
    return Requirement("admin")


@functools.lru_cache(maxsize=4096)
def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
    return bool((mapped or address).is_loopback)


def authorize(
    store: KeyStore, token: str | None, need: Requirement, *, loopback: bool
) -> ApiKey | None:
    """The caller's key when it may proceed; raises Unauthorized (401) or Forbidden (403)."""
    if need.need == "public":
        return None
    if not store.has_active_keys():
        if token:
            raise Unauthorized("unknown API key: this server has no API keys")
        if need.need == "admin" and not loopback:
            raise Forbidden(
                "admin routes answer only on loopback while no API key exists: "
                "create one with `berth keys create --scope admin`"
            )
        return None
    if not token:
        raise Unauthorized(
            "this route needs an API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
        )
    key = store.authenticate(token)
    if key is None:
        raise Unauthorized("invalid or revoked API key")
    if not key.covers(need.need, need.model):
        wanted = need.need + (f" on model {need.model!r}" if need.model else "")
        raise Forbidden(f"API key {key.id!r} ({key.describe()}) does not allow {wanted}")
    return key
