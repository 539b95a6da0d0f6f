"""Pure ASGI middleware: request ids and the request-body size limit."""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from berth.errors import PayloadTooLarge
from berth.ids import new_id

__all__ = [
    "RequestContextMiddleware",
    "assign_request_id",
    "body_limit_message",
    "request_id_of",
]

_VALID_ID = re.compile(rb"^[A-Za-z0-9._:@/+=-]{1,128}$")


def request_id_of(scope: Scope) -> str:
    """The request id the middleware assigned to this request."""
    state: dict[str, Any] = scope.get("state", {})
    return str(state.get("request_id", ""))


def assign_request_id(scope: Scope) -> tuple[bytes, int]:
    """Give the request its id (a sane `X-Request-ID` it sent, or a new one) in
    `scope["state"]`; returns the id and the declared Content-Length (-1 when none)."""
    request_id = b""
    length = -1
    for key, value in scope["headers"]:
        if key == b"x-request-id" and _VALID_ID.match(value):
            request_id = value
        elif key == b"content-length" and value.isdigit():
            length = int(value)
    if not request_id:
        request_id = new_id().encode()
    scope.setdefault("state", {})["request_id"] = request_id.decode()
    return request_id, length


def body_limit_message(max_body_bytes: int) -> str:
    return f"request body exceeds {max_body_bytes} bytes (BERTH_MAX_BODY_BYTES)"


class RequestContextMiddleware:
    """Assigns a request id (echoing a sane `X-Request-ID`), returns it as a header, caps bodies."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id, length = assign_request_id(scope)
        header = (b"x-request-id", request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        if length > self.max_body_bytes:
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
        return body_limit_message(self.max_body_bytes)

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
