"""The hot path: predict requests answered without FastAPI's router, by the same handler.

FastAPI's per-request routing and dependency solving cost more than a small model's prediction
(see docs/performance.md). This innermost pure-ASGI middleware recognises the predict paths and
calls `rest.predict_response` directly; every other request, and the OpenAPI description of the
predict routes, stay with FastAPI. Middleware added around it (request ids, body limit, CORS,
and anything else pure-ASGI) still runs; a check written as a FastAPI route dependency would not,
so cross-cutting checks belong in middleware.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from berth.dataplane import DataPlane
from berth.errors import BerthError
from berth.server.errors import berth_error_response
from berth.server.middleware import request_id_of
from berth.server.rest import predict_response

__all__ = ["PredictFastPath"]

_PREDICT = re.compile(
    r"^(?:/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?)?/predict(?P<many>/batch)?$"
)


class PredictFastPath:
    """Serves `POST [/models/{name}[/versions/{version}]]/predict[/batch]` straight away."""

    def __init__(self, app: ASGIApp, dataplane: DataPlane, routes: dict[str, Any]) -> None:
        self.app = app
        self.dataplane = dataplane
        self.routes = routes  # path template -> FastAPI route, set in the scope for observers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            match = _PREDICT.match(path)
        if match is None:
            await self.app(scope, receive, send)
            return
        name, version, many = match["name"], match["version"], match["many"] is not None
        template = "/predict"
        if name is not None:
            template = "/models/{name}" + ("/versions/{version}" if version else "") + template
        template += "/batch" if many else ""
        scope["route"] = self.routes.get(template)
        scope["path_params"] = {
            k: v for k, v in (("name", name), ("version", version)) if v is not None
        }
        try:
            body = await _read_body(receive)
            if body is None:  # the client went away
                return
            response = await predict_response(self.dataplane, body, scope, name, version, many)
        except BerthError as exc:
            response = berth_error_response(exc, request_id_of(scope))
        await response(scope, receive, send)


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
