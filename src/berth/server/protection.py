"""Wire keys, rate limits and the load guard into an app, document them in OpenAPI, and report
their counters on `GET /admin/security`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.responses import Response

from berth.dataplane import DataPlane
from berth.security.access import requirement_for
from berth.security.keys import KeyStore, default_keys_path
from berth.security.ratelimit import build_rate_limiter
from berth.server.access import AccessMiddleware, Gate, RateLimits
from berth.server.encoding import json_response
from berth.server.guard import GuardState, LoadGuardMiddleware
from berth.server.schemas import ErrorBody
from berth.settings import Settings

__all__ = ["close_protection", "install_protection"]

_ERRORS = {
    "401": "No API key, or an unknown or revoked one",
    "403": "The key's scope does not cover this route (or admin off loopback without keys)",
    "429": "Rate limit exceeded (see Retry-After and the RateLimit-* headers)",
    "503": "Not ready, overloaded or shutting down (see Retry-After)",
    "504": "The request took longer than the server's timeout",
}


def install_protection(app: FastAPI, settings: Settings, dataplane: DataPlane) -> None:
    """Add the access and load-guard middleware (inside the request-id middleware) and the
    security status route. Call before the outer middleware is added."""
    public = frozenset(settings.public_paths)
    metrics = dataplane.monitor.metrics
    store = KeyStore(settings.api_keys_file or default_keys_path(settings.registry))
    limits = None
    if settings.rate_limit_key_rate or settings.rate_limit_address_rate:
        limits = RateLimits(
            build_rate_limiter(settings.rate_limit_storage, settings.rate_limit_on_storage_error),
            settings.rate_limit_key_rate,
            settings.rate_limit_key_burst,
            settings.rate_limit_address_rate,
            settings.rate_limit_address_burst,
            metrics,
        )
    gate = Gate(store, limits, metrics)  # gRPC uses the same one (app.state.gate)
    guard = GuardState(max_in_flight=settings.max_in_flight, metrics=metrics)
    app.state.keys, app.state.rate_limits, app.state.guard = store, limits, guard
    app.state.gate = gate
    app.include_router(_status_router(store, limits, guard))
    app.add_middleware(
        LoadGuardMiddleware,
        state=guard,
        public_paths=public,
        timeout_s=settings.request_timeout_s,
    )
    app.add_middleware(
        AccessMiddleware,
        gate=gate,
        public_paths=public,
        default_model=dataplane.default_name,
        routes=app.router.routes,
    )
    _document(app, public)


async def close_protection(app: FastAPI) -> None:
    limits: RateLimits | None = getattr(app.state, "rate_limits", None)
    if limits is not None:
        await limits.limiter.close()


def _status_router(store: KeyStore, limits: RateLimits | None, guard: GuardState) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/admin/security",
        tags=["admin"],
        summary="Counters of access control, rate limits and load shedding (admin)",
    )
    async def security_status() -> Response:
        return json_response(
            {
                "api_keys": sum(key.active for key in store.list_keys()),
                "rate_limit": {
                    "storage": limits.limiter.name if limits else None,
                    "limited": limits.limited if limits else 0,
                    "storage_errors": limits.limiter.storage_errors if limits else 0,
                },
                "load": {
                    "in_flight": guard.in_flight,
                    "max_in_flight": guard.max_in_flight,
                    "shed": guard.shed,
                    "timeouts": guard.timeouts,
                    "draining": guard.draining,
                },
            }
        )

    return router


def _document(app: FastAPI, public: frozenset[str]) -> None:
    """Declare the key schemes and the access and overload answers of every guarded operation."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        if "BearerKey" in schema.get("components", {}).get("securitySchemes", {}):
            return schema
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {}).update(
            {
                "BearerKey": {"type": "http", "scheme": "bearer"},
                "HeaderKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
        )
        components.setdefault("schemas", {}).setdefault("ErrorBody", ErrorBody.model_json_schema())
        for path, operations in schema.get("paths", {}).items():
            if requirement_for(path, public).need == "public":
                continue
            for method, operation in operations.items():
                operation["security"] = [{"BearerKey": []}, {"HeaderKey": []}, {}]
                _document_errors(method, operation.setdefault("responses", {}), "{" in path)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _document_errors(method: str, responses: dict[str, Any], names_something: bool) -> None:
    """Add the answers every guarded operation can give, where the route did not say already."""
    error = {"$ref": "#/components/schemas/ErrorBody"}
    # the simple API answers an ErrorBody, the protocol routes {"error": ...}: both fit this
    minimal = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
    for status, text in _ERRORS.items():
        if status == "503":
            # readiness routes answer 503 with their own body; everything else with an ErrorBody
            ok = responses.get("200", {}).get("content", {}).get("application/json", {})
            own = ok.get("schema", {})
            responses.setdefault(status, {"description": text, **_json({"anyOf": [error, own]})})
        else:
            responses.setdefault(status, {"description": text, **_json(error)})
    if method in ("post", "put", "patch"):  # a body that is not JSON at all
        responses.setdefault("400", {"description": "Malformed request body", **_json(minimal)})
    if names_something:  # a model or version in the path that does not exist
        responses.setdefault("404", {"description": "Unknown model or version", **_json(minimal)})
