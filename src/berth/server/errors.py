"""Map every error to the one body shape `{"error": "...", "code": "..."}` and its status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from berth.errors import BerthError, RateLimited, Unavailable
from berth.server.encoding import json_response
from berth.server.middleware import request_id_of

__all__ = ["berth_error_response", "error_response", "install_error_handlers"]

log = logging.getLogger("berth.server")

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def error_response(
    status: int, message: str, code: str, retry_after: int | None = None
) -> Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return json_response({"error": message, "code": code}, status=status, headers=headers)


def berth_error_response(exc: BerthError, request_id: str) -> Response:
    """The response to a BerthError (5xx other than 503 are logged first)."""
    if exc.status_code >= 500 and not isinstance(exc, Unavailable):
        log.error("%s: %s", exc.code, exc.message, extra={"request_id": request_id})
    retry = exc.retry_after_s if isinstance(exc, Unavailable | RateLimited) else None
    return error_response(exc.status_code, exc.message, exc.code, retry)


async def _berth_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BerthError)
    return berth_error_response(exc, request_id_of(request.scope))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "path", "query"))
    message = f"{where}: {first.get('msg', 'invalid request')}" if where else str(first.get("msg"))
    return error_response(422, message, "invalid_input")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(
        exc.status_code, str(exc.detail), _HTTP_CODES.get(exc.status_code, "http_error")
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc, extra={"request_id": request_id_of(request.scope)})
    return error_response(500, "internal server error", "internal_error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(BerthError, _berth_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
