"""The app factory: one FastAPI app bound to one data plane, built on demand (never at import)."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Receive, Scope, Send

from berth import __version__, logs
from berth.dataplane import DataPlane
from berth.registry import Registry
from berth.server import admin, rest, v1, v2
from berth.server.errors import install_error_handlers
from berth.server.fastpath import PredictFastPath
from berth.server.guard import SecurityHeadersMiddleware
from berth.server.middleware import RequestContextMiddleware
from berth.server.observability import build_monitoring_router
from berth.server.observe import ObservabilityMiddleware, RequestObserver
from berth.server.protection import close_protection, install_protection
from berth.server.schemas import BatchRequest, PredictRequest
from berth.settings import Settings

__all__ = ["create_app"]

DESCRIPTION = """Berth serves registered models over a simple JSON API.

Text models take `{"text": "..."}`; tabular models take `{"features": [numbers]}` or
`{"features": {"name": number}}`. Batches are `{"instances": [...]}`. Errors always have the
body `{"error": "...", "code": "..."}`.
"""


class BerthApp(FastAPI):
    """FastAPI, with the predict fast path (server/fastpath.py) asked first about every request."""

    fast_path: PredictFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast_path = self.fast_path
        if fast_path is not None:
            matched = fast_path.match(scope)
            if matched is not None:
                await fast_path.serve(scope, receive, send, matched)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, dataplane: DataPlane | None = None) -> BerthApp:
    """Build the ASGI app; models load in its lifespan, and `/ready` turns 200 when they have."""
    settings = settings or Settings()
    if dataplane is None:
        dataplane = DataPlane(Registry.from_settings(settings), settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await dataplane.start()
        # What exists now (libraries, models) lives as long as the process: keep the garbage
        # collector from scanning it again on every full collection of the request path.
        gc.freeze()
        try:
            yield
        finally:
            await dataplane.stop()
            await close_protection(app)
            logs.drain()

    app = BerthApp(title="Berth", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.dataplane = dataplane
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(rest.build_router(dataplane))
    app.include_router(admin.build_admin_router(dataplane))
    app.include_router(v2.build_router(dataplane, settings))
    app.include_router(v1.build_router(dataplane))
    app.include_router(build_monitoring_router(dataplane))
    observer = RequestObserver(dataplane.monitor.metrics, access_log_on=settings.access_log)
    install_protection(app, settings, dataplane)  # keys, rate limits, load guard: inside the ids
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)
    if dataplane.monitor.tracing is not None:  # off: not even imported
        from berth.server.tracing import TracingMiddleware

        app.add_middleware(TracingMiddleware, tracing=dataplane.monitor.tracing)
    app.add_middleware(ObservabilityMiddleware, observer=observer)
    if settings.security_headers:
        app.add_middleware(SecurityHeadersMiddleware)
    if settings.cors_origins:  # outermost, so preflight answers never reach the routes
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=[
                "X-Request-ID",
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
            ],
        )
    # with CORS or tracing, predict requests take the stack, whose middleware does those
    if settings.fast_path and not settings.cors_origins and dataplane.monitor.tracing is None:
        app.fast_path = PredictFastPath(
            dataplane,
            settings,
            {r.path: r for r in _api_routes(app.router.routes)},
            app.state.gate,
            app.state.guard,
            observer,
        )
    _add_body_schemas(app)
    return app


def _api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, also inside included routers (FastAPI 0.16x keeps those whole)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _api_routes(inner.routes)


def _add_body_schemas(app: FastAPI) -> None:
    """Put the hand-parsed request bodies' schemas into the OpenAPI components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (PredictRequest, BatchRequest):
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(body.pop("$defs", {}))
                components[model.__name__] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
