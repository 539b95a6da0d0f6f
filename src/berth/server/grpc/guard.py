"""API keys and rate limits over gRPC: the HTTP rules, read from call metadata.

Each RPC is judged as the REST route that does the same thing (`ModelInfer` as
`/v2/models/{name}/infer`, `RepositoryIndex` as `/v2/repository/index`), by the same `Gate`, so
one table (`berth.security.access`, with `BERTH_PUBLIC_PATHS`) decides for both protocols. The
key travels as `authorization: Bearer <key>` or `x-api-key: <key>` metadata. The model a call
names is in its request message, so the check runs when the message has arrived: once per call,
or once per message of `ModelStreamInfer`. The health and reflection services stay open, like
`/health` and `/openapi.json`.
"""

from __future__ import annotations

import logging
import math
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc

from berth.security.access import Requirement, requirement_for
from berth.server.access import Gate

__all__ = ["AccessInterceptor"]

log = logging.getLogger("berth.server")

SERVICE = "/inference.GRPCInferenceService/"

# RPC -> (the REST path it answers like, with "m" for a model, and the message field naming it)
_ROUTES: dict[str, tuple[str, str | None]] = {
    "ServerLive": ("/v2/health/live", None),
    "ServerReady": ("/v2/health/ready", None),
    "ServerMetadata": ("/v2", None),
    "ModelReady": ("/v2/models/m/ready", "name"),
    "ModelMetadata": ("/v2/models/m", "name"),
    "ModelInfer": ("/v2/models/m/infer", "model_name"),
    "ModelStreamInfer": ("/v2/models/m/infer", "model_name"),
    "RepositoryIndex": ("/v2/repository/index", None),
    "RepositoryModelLoad": ("/v2/repository/models/m/load", None),
    "RepositoryModelUnload": ("/v2/repository/models/m/unload", None),
}


def _token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    for name, value in metadata or ():
        if not isinstance(value, str):
            continue
        if name == "authorization":
            scheme, _, credentials = value.partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
        elif name == "x-api-key" and value.strip():
            return value.strip()
    return None


def peer_address(peer: str) -> str:
    """The IP address in a gRPC peer string: `ipv4:127.0.0.1:5000`, `ipv6:[::1]:5000`."""
    kind, _, rest = urllib.parse.unquote(peer).partition(":")
    if kind not in ("ipv4", "ipv6"):
        return ""
    host = rest.rpartition(":")[0]
    return host.strip("[]")


class AccessInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps the handlers of guarded RPCs so that each call passes the gate first."""

    def __init__(self, gate: Gate, public_paths: frozenset[str]) -> None:
        self.gate = gate
        self.public_paths = public_paths

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or not method.startswith(SERVICE):
            return handler  # unknown (UNIMPLEMENTED), or the health and reflection services
        route = _ROUTES.get(method.removeprefix(SERVICE))
        if route is None:  # an RPC added later is admin until someone decides otherwise
            need, field = Requirement("admin"), None
        else:
            need, field = requirement_for(route[0], self.public_paths), route[1]
        if need.need == "public":
            return handler
        token = _token(details.invocation_metadata)

        async def judge(request: Any, context: grpc.aio.ServicerContext) -> None:
            named = getattr(request, field) if field and need.need == "predict" else None
            await self._judge(Requirement(need.need, named), token, context)

        if handler.unary_unary is not None:
            return _unary(handler, judge)
        if handler.stream_stream is not None:
            return _stream(handler, judge)
        log.error("no access check for the streaming kind of %s: refusing it", method)
        return None

    async def _judge(
        self, need: Requirement, token: str | None, context: grpc.aio.ServicerContext
    ) -> None:
        """Abort the call with the gate's error (and a retry hint when rate-limited)."""
        verdict = await self.gate.check(token, need, peer_address(context.peer()), "grpc")
        error = verdict.error
        if error is None:
            return
        trailers: list[tuple[str, str]] = []
        decision = verdict.decision
        if decision is not None and not decision.allowed:
            trailers = [
                ("retry-after", str(max(1, math.ceil(decision.retry_after_s)))),
                ("ratelimit-limit", str(decision.limit)),
                ("ratelimit-remaining", str(decision.remaining)),
                ("ratelimit-reset", str(math.ceil(decision.reset_s))),
            ]
        await context.abort(grpc.StatusCode[error.grpc_code], error.message, tuple(trailers))


Judge = Callable[[Any, grpc.aio.ServicerContext], Awaitable[None]]


def _unary(handler: grpc.RpcMethodHandler, judge: Judge) -> grpc.RpcMethodHandler:
    behaviour = handler.unary_unary

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await judge(request, context)
        return await behaviour(request, context)

    return grpc.unary_unary_rpc_method_handler(
        guarded,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _stream(handler: grpc.RpcMethodHandler, judge: Judge) -> grpc.RpcMethodHandler:
    behaviour = handler.stream_stream

    async def guarded(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async def judged() -> AsyncIterator[Any]:
            async for request in requests:
                await judge(request, context)  # a refusal ends the stream with its status
                yield request

        async for reply in behaviour(judged(), context):
            yield reply

    return grpc.stream_stream_rpc_method_handler(
        guarded,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
