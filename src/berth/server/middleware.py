"""Pure ASGI middleware: request ids and the request-body size limit."""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from berth.errors import PayloadTooLarge

__all__ = ["RequestContextMiddleware", "request_id_of"]

_VALID_ID = re.compile(rb"^[A-Za-z0-9._:@/+=-]{1,128}$")


def request_id_of(scope: Scope) -> str:
    """The request id the middleware assigned to this request."""
    state: dict[str, Any] = scope.get("state", {})
    return str(state.get("request_id", ""))


class RequestContextMiddleware:
    """Assigns a request id (echoing a sane `X-Request-ID`), returns it as a header, caps bodies."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = b""
        length = None
        for key, value in scope["headers"]:
            if key == b"x-request-id" and _VALID_ID.match(value):
                request_id = value
            elif key == b"content-length":
                length = value
        if not request_id:
            request_id = uuid.uuid4().hex.encode()
        scope.setdefault("state", {})["request_id"] = request_id.decode()
        header = (b"x-request-id", request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await self._too_large(send_with_id)
            return

        received = 0

        async def receive_capped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise PayloadTooLarge(self._message())
            return message

        await self.app(scope, receive_capped, send_with_id)

    def _message(self) -> str:
        return f"request body exceeds {self.max_body_bytes} bytes (BERTH_MAX_BODY_BYTES)"

    async def _too_large(self, send: Send) -> None:
        body = orjson.dumps({"error": self._message(), "code": PayloadTooLarge.code})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})
