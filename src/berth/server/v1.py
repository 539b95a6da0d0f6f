"""The V1 protocol of KServe and TF Serving: `{"instances": [...]}` in, `{"predictions": [...]}` out.

Classifiers predict labels, regressors values; errors have the body `{"error": "..."}` as in V2.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from berth.dataplane import DataPlane
from berth.errors import MalformedRequest
from berth.server.encoding import json_response, parse_json
from berth.server.middleware import request_id_of
from berth.server.v2 import KServeRoute

__all__ = ["build_router"]


def _instances(body: Any) -> Any:
    if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
        raise MalformedRequest('expected a JSON object with either "instances" or "inputs"')
    return body.get("instances", body.get("inputs"))


def build_router(dataplane: DataPlane) -> APIRouter:
    """The V1 routes, bound to one data plane."""
    router = APIRouter(
        prefix="/v1", tags=["v1 protocol (kserve, tf serving)"], route_class=KServeRoute
    )

    @router.get("/models", summary="Served models")
    async def models() -> Response:
        return json_response({"models": list(dataplane.served)})

    @router.get("/models/{name}", summary="Model readiness (200 or 503)")
    async def ready(name: str) -> Response:
        ready = dataplane.model_ready(name)
        return json_response({"name": name, "ready": ready}, status=200 if ready else 503)

    async def predict(request: Request, name: str, version: str | None) -> Response:
        body = {"instances": _instances(parse_json(await request.body()))}
        prediction = await dataplane.predict(
            name, version, body, many=True, request_id=request_id_of(request.scope)
        )
        outputs = prediction.outputs
        values = outputs.values.tolist() if outputs.values is not None else outputs.labels
        return json_response({"predictions": list(values or [])})

    @router.post("/models/{name}:predict", summary="Predict instances")
    async def predict_default(request: Request, name: str) -> Response:
        return await predict(request, name, None)

    @router.post(
        "/models/{name}/versions/{version}:predict", summary="Predict instances with a version"
    )
    async def predict_version(request: Request, name: str, version: str) -> Response:
        return await predict(request, name, version)

    return router
