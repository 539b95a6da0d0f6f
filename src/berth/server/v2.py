"""The Open Inference Protocol (KServe V2) over REST, as tritonclient and KServe clients call it.

Errors on these routes have the protocol's body `{"error": "..."}`: 400 for bad input, 404 for an
unknown model or version, 503 (with Retry-After) for a model that is not ready, 500 otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from berth.dataplane import DataPlane
from berth.errors import BerthError, InvalidInput, MalformedRequest, Unavailable
from berth.server import inference
from berth.server.encoding import json_response, parse_json
from berth.server.middleware import request_id_of
from berth.server.v2_codec import HEADER_LENGTH, decompress, encode_response, parse_request
from berth.settings import Settings
from berth.types import ModelCard

__all__ = ["KServeRoute", "build_router", "v2_error"]

log = logging.getLogger("berth.server")


def v2_status(exc: BerthError) -> int:
    """The HTTP status V2 clients expect: input errors are 400, not 422."""
    return 400 if isinstance(exc, InvalidInput) else exc.status_code


def v2_error(exc: BerthError) -> Response:
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Unavailable) else None
    return json_response({"error": exc.message}, status=v2_status(exc), headers=headers)


class KServeRoute(APIRoute):
    """A route whose errors take the V1/V2 body `{"error": ...}` instead of Berth's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except BerthError as exc:
                if exc.status_code >= 500 and not isinstance(exc, Unavailable):
                    log.error("%s: %s", exc.code, exc.message)
                return v2_error(exc)

        return guarded


def build_router(dataplane: DataPlane, settings: Settings) -> APIRouter:
    """The V2 routes, bound to one data plane."""
    router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"], route_class=KServeRoute)

    @router.get("/health/live", summary="Liveness (200 while the process answers)")
    async def live() -> Response:
        return json_response({"live": True})

    @router.get("/health/ready", summary="Readiness (200 once every served model loaded, else 503)")
    async def ready() -> Response:
        return json_response({"ready": dataplane.ready}, status=200 if dataplane.ready else 503)

    @router.get("", summary="Server metadata")
    async def metadata() -> Response:
        return json_response(inference.server_metadata(settings))

    @router.get("/models", summary="Served models")
    async def models() -> Response:
        return json_response({"models": list(dataplane.served)})

    def model_metadata(name: str, version: str | None) -> Response:
        card = dataplane.card(name, version)
        versions = dataplane.registry.versions(card.name)
        return json_response(inference.model_metadata(card, versions))

    @router.get("/models/{name}", summary="Model metadata")
    async def metadata_default(name: str) -> Response:
        return model_metadata(name, None)

    @router.get("/models/{name}/versions/{version}", summary="Model metadata of a version")
    async def metadata_version(name: str, version: str) -> Response:
        return model_metadata(name, version)

    def model_ready(name: str, version: str | None) -> Response:
        ready = dataplane.model_ready(name, version)
        return json_response({"name": name, "ready": ready}, status=200 if ready else 503)

    @router.get("/models/{name}/ready", summary="Model readiness (200 or 503)")
    async def ready_default(name: str) -> Response:
        return model_ready(name, None)

    @router.get("/models/{name}/versions/{version}/ready", summary="Version readiness")
    async def ready_version(name: str, version: str) -> Response:
        return model_ready(name, version)

    async def infer(request: Request, name: str, version: str | None) -> Response:
        body = decompress(
            await request.body(), request.headers.get("content-encoding"), settings.max_body_bytes
        )
        card = dataplane.card(name, version)
        parsed = parse_request(body, request.headers.get(HEADER_LENGTH), card)
        request_id = parsed.id or request_id_of(request.scope)  # the id the logs and errors name
        key = request.headers.get("x-berth-key")
        prediction, outputs = await inference.infer(
            dataplane, card, version, parsed, request_id, key
        )
        head = {
            "model_name": prediction.card.name,
            "model_version": str(prediction.card.version),
            "id": request_id,
        }
        binary = parsed.parameters.get("binary_data_output") is True
        content, headers = encode_response(head, outputs, binary)
        return Response(content, headers=headers)

    body = _request_body(list(dataplane.served.values()))

    @router.post("/models/{name}/infer", summary="Inference", openapi_extra=body)
    async def infer_default(request: Request, name: str) -> Response:
        return await infer(request, name, None)

    @router.post(
        "/models/{name}/versions/{version}/infer",
        summary="Inference with a version",
        openapi_extra=body,
    )
    async def infer_version(request: Request, name: str, version: str) -> Response:
        return await infer(request, name, version)

    if settings.model_control:
        _add_repository_routes(router, dataplane)
    return router


def _request_body(cards: list[ModelCard]) -> dict[str, Any]:
    """The OpenAPI request body of `infer`: one JSON example per served model."""
    examples = {}
    for card in cards:
        example = card.input_example or {}
        spec = inference.input_specs(card)[0]
        if card.signature.kind == "text":
            data: list[Any] = [example.get("text", "example")]
        else:
            values = example.get("features", [0.0] * spec.shape[1])
            data = list(values.values()) if isinstance(values, dict) else values
        shape = [1] if spec.datatype == "BYTES" else [1, len(data)]
        tensor = {"name": spec.name, "datatype": spec.datatype, "shape": shape, "data": data}
        examples[card.name] = {"summary": card.ref, "value": {"inputs": [tensor]}}
    content = {"schema": {"type": "object"}, "examples": examples}
    return {"requestBody": {"required": True, "content": {"application/json": content}}}


async def _optional_json(request: Request) -> dict[str, Any]:
    body = await request.body()
    if not body.strip():
        return {}
    data = parse_json(body)
    if not isinstance(data, dict):
        raise MalformedRequest("the request body must be a JSON object")
    return data


def _add_repository_routes(router: APIRouter, dataplane: DataPlane) -> None:
    """The model-repository extension: index, load and unload of the served models."""

    @router.post("/repository/index", summary="Served models and their state")
    async def index(request: Request) -> Response:
        only_ready = (await _optional_json(request)).get("ready") is True
        return json_response(
            [
                entry
                for entry in inference.repository_index(dataplane)
                if not only_ready or entry["state"] == "READY"
            ]
        )

    @router.post(
        "/repository/models/{name}/load",
        summary="Load a served model (again)",
        response_class=Response,  # 200 with an empty body, as the protocol says
    )
    async def load(request: Request, name: str) -> Response:
        parameters = (await _optional_json(request)).get("parameters") or {}
        inference.check_load_parameters(parameters)
        await dataplane.load_model(name)
        return Response(status_code=200)

    @router.post(
        "/repository/models/{name}/unload",
        summary="Unload a model (503 until loaded)",
        response_class=Response,
    )
    async def unload(request: Request, name: str) -> Response:
        await _optional_json(request)
        dataplane.unload_model(name)
        return Response(status_code=200)
