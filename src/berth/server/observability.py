"""Monitoring routes: `/metrics`, drift, the prediction-log admin query and the dashboard."""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

from fastapi import APIRouter, Query
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from berth.dataplane import DataPlane
from berth.errors import NotFound
from berth.monitoring.metrics import CONTENT_TYPE_LATEST
from berth.monitoring.summary import model_totals
from berth.server.encoding import json_response

__all__ = ["build_monitoring_router"]


def _dashboard_html() -> str:
    return resources.files("berth.server").joinpath("dashboard.html").read_text("utf-8")


def build_monitoring_router(dataplane: DataPlane) -> APIRouter:
    """Routes that read the data plane's monitor; none of them changes state."""
    router = APIRouter()
    monitor = dataplane.monitor

    @router.get(
        "/metrics",
        tags=["monitoring"],
        summary="Prometheus metrics (text format)",
        response_class=PlainTextResponse,
    )
    async def metrics() -> Response:
        body = await asyncio.to_thread(monitor.metrics.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @router.get(
        "/models/{name}/drift",
        tags=["monitoring"],
        summary="PSI and KS per feature and for the predictions: live window vs reference",
    )
    async def drift(name: str, version: str | None = None) -> Response:
        card = dataplane.card(name, version)
        return json_response(await asyncio.to_thread(monitor.drift, card))

    @router.get(
        "/admin/predictions",
        tags=["admin"],
        summary="Query the prediction log (newest first)",
    )
    async def predictions(
        model: str | None = None,
        since: str | None = Query(None, description="15m, 2h, 7d or an ISO time"),
        request_id: str | None = None,
        limit: int = Query(100, ge=1, le=10_000),
    ) -> Response:
        plog = monitor.prediction_log
        if plog is None:
            raise NotFound("the prediction log is off (BERTH_PREDICTION_LOG=false)")
        from berth.monitoring import store  # SQLAlchemy: not imported on the way to readiness

        rows = await asyncio.to_thread(
            store.query,
            plog.engine,
            model=model,
            since=store.parse_since(since),
            limit=limit,
            request_id=request_id,
        )
        return json_response({"predictions": rows, "count": len(rows)})

    @router.get(
        "/dashboard",
        tags=["monitoring"],
        summary="A live dashboard page",
        response_class=HTMLResponse,
    )
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(_dashboard_html())

    @router.get("/dashboard/data", tags=["monitoring"], summary="What the dashboard shows")
    async def dashboard_data() -> Response:
        totals = await asyncio.to_thread(model_totals, monitor.metrics)
        loaded = {(c.name, c.version) for c in dataplane.loaded()}
        models: list[dict[str, Any]] = []
        for card in dataplane.served.values():
            report = await asyncio.to_thread(monitor.drift, card)
            models.append(
                {
                    "name": card.name,
                    "version": card.version,
                    "task": card.task,
                    "aliases": dataplane.registry.aliases(card.name),
                    "route": route.describe() if (route := dataplane.route(card.name)) else None,
                    "loaded": (card.name, card.version) in loaded,
                    "default": card.name == dataplane.default_name,
                    "totals": totals["models"].get(card.name),
                    "drift": {
                        "status": report["status"],
                        "window_rows": report["window_rows"],
                        "max_psi": report.get("max_psi"),
                        "features": {
                            k: {"psi": v["psi"], "ks": v["ks"]}
                            for k, v in report.get("features", {}).items()
                        },
                        "prediction_psi": (report.get("prediction") or {}).get("psi"),
                    },
                }
            )
        return json_response({"time": totals["time"], "ready": dataplane.ready, "models": models})

    return router
