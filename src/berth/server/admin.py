"""Routes, experiments and feedback: the traffic-management API."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.responses import Response

from berth.dataplane import DataPlane
from berth.errors import InvalidInput, NotFound
from berth.router import Route
from berth.server.encoding import json_response, parse_json
from berth.server.schemas import ErrorBody

__all__ = ["build_admin_router", "route_state"]

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown model, version or request id"},
    422: {"model": ErrorBody, "description": "Invalid route or feedback"},
    500: {"model": ErrorBody, "description": "A target version failed to load; nothing changed"},
}


class Feedback(BaseModel):
    """Ground truth for an earlier prediction, named by its request id."""

    request_id: str = Field(min_length=1)
    label: str | int | float | bool | None = Field(
        default=None, description="True class (classification)."
    )
    value: float | None = Field(default=None, description="True value (regression).")


def route_state(dataplane: DataPlane, name: str) -> dict[str, Any]:
    """A model's route, the versions its targets resolve to now, and recent events."""
    dataplane.card(name)
    traffic = dataplane.traffic.get(name)
    route = traffic.route if traffic else None
    return {
        "model": name,
        "route": route.model_dump(mode="json", exclude_none=True) if route else None,
        "serving": {t or "default": v for t, v in traffic.versions().items()} if traffic else {},
        "events": [e for e in dataplane.events if e["model"] == name][-10:],
    }


def build_admin_router(dataplane: DataPlane) -> APIRouter:
    router = APIRouter(tags=["traffic"])

    @router.get(
        "/models/{name}/route", summary="The model's traffic route and the versions it serves"
    )
    async def get_route(name: str) -> Response:
        return json_response(route_state(dataplane, name))

    @router.put(
        "/models/{name}/route",
        responses=ERRORS,
        summary="Set the route: weights over versions or aliases, sticky field, shadow, auto-rollback",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": Route.model_json_schema(),
                        "example": {
                            "weights": {"production": 90, "canary": 10},
                            "sticky_field": "user_id",
                        },
                    }
                },
            }
        },
    )
    async def put_route(request: Request, name: str) -> Response:
        dataplane.card(name)
        try:
            route = Route.model_validate(parse_json(await request.body()))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidInput(
                f"invalid route: {where + ': ' if where else ''}{first['msg']}"
            ) from None
        # Every target must load and warm up here before any worker is told about the route.
        for target in {*route.weights, *([route.shadow] if route.shadow else [])}:
            version = dataplane.registry.resolve(name, target)
            if dataplane.traffic.get(name) is None or dataplane.traffic[name].find(version) is None:
                await dataplane.ensure_loaded(name, version)
        dataplane.registry.set_route(name, route.model_dump(mode="json", exclude_none=True))
        await dataplane.refresh(name)
        return json_response(route_state(dataplane, name))

    @router.delete(
        "/models/{name}/route", summary="Remove the route: all traffic to the served version"
    )
    async def delete_route(name: str) -> Response:
        dataplane.card(name)
        dataplane.registry.set_route(name, None)
        await dataplane.refresh(name)
        return json_response(route_state(dataplane, name))

    @router.get(
        "/models/{name}/experiment",
        summary="Per-variant requests, errors, latency, labels, feedback",
    )
    async def experiment(name: str) -> Response:
        card = dataplane.card(name)
        route = dataplane.route(name)
        report = dataplane.experiments.report(name, card.task)
        return json_response(
            {"model": name, "route": route.describe() if route else None, **report}
        )

    @router.post(
        "/feedback",
        responses=ERRORS,
        summary="Record the true label or value of an earlier prediction",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": Feedback.model_json_schema(),
                        "example": {"request_id": "7f3c0d...", "label": "complaint"},
                    }
                },
            }
        },
    )
    async def feedback(request: Request) -> Response:
        try:
            given = Feedback.model_validate(parse_json(await request.body()))
        except ValidationError as exc:
            raise InvalidInput(f"invalid feedback: {exc.errors()[0]['msg']}") from None
        truth = given.value if given.value is not None else given.label
        if truth is None:
            raise InvalidInput('feedback needs "label" (classification) or "value" (regression)')
        joined = dataplane.experiments.feedback(given.request_id, truth)
        if joined is None:
            raise NotFound(
                f"no recent prediction with request id {given.request_id!r} in this process"
            )
        dataplane.monitor.feedback(given.request_id, truth)  # durable, joined in the prediction log
        return json_response(
            {"request_id": given.request_id, "model": joined[0], "variant": joined[1]}
        )

    return router
