"""Start the gRPC server (inference, health, reflection) in the event loop that runs the HTTP app."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
from fastapi import FastAPI
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from berth.dataplane import DataPlane
from berth.errors import BerthError
from berth.server.access import Gate
from berth.server.grpc.guard import AccessInterceptor
from berth.server.grpc.observe import ObserveInterceptor
from berth.server.grpc.servicer import InferenceServicer
from berth.server.proto import inference_pb2 as pb
from berth.server.proto import inference_pb2_grpc as pb_grpc
from berth.server.workers import tls_files
from berth.settings import Settings

__all__ = ["check_port", "serve_alongside", "start_grpc_server"]

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
GRACE_S = 5.0


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_port(host: str, port: int) -> None:
    """Fail with a plain message, before anything starts, when the gRPC port is taken."""
    try:
        socket.create_server(
            (host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET
        ).close()
    except OSError as exc:
        raise BerthError(f"cannot serve gRPC on {_address(host, port)}: {exc.strerror}") from None


async def start_grpc_server(
    settings: Settings, dataplane: DataPlane, gate: Gate | None = None
) -> tuple[Any, health.aio.HealthServicer]:
    """A started grpc.aio server on `settings.grpc_port`, and its health servicer (SERVING).

    `gate`: API keys and rate limits, shared with the HTTP app (none: every call passes).
    """
    limit = settings.grpc_max_message_bytes
    interceptors: list[Any] = [ObserveInterceptor(dataplane.monitor)]  # first: sees every answer
    if gate is not None:
        interceptors.append(AccessInterceptor(gate, frozenset(settings.public_paths)))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ],
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(dataplane, settings), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    _add_port(server, settings)
    await server.start()
    for name in ("", SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer


def _add_port(server: Any, settings: Settings) -> None:
    """TLS with the HTTP certificate and key when they are set, else plaintext."""
    address = _address(settings.host, settings.grpc_port)
    cert, key = tls_files(settings)
    if cert is None or key is None:
        server.add_insecure_port(address)
        return
    pair = (Path(key).read_bytes(), Path(cert).read_bytes())
    server.add_secure_port(address, grpc.ssl_server_credentials([pair]))


def serve_alongside(app: FastAPI, settings: Settings, dataplane: DataPlane) -> None:
    """Run gRPC inside the app's lifespan: it starts once the models loaded, stops before they go."""
    check_port(settings.host, settings.grpc_port)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with inner(app) as state:
            server, health_servicer = await start_grpc_server(settings, dataplane, app.state.gate)
            loop = asyncio.get_running_loop()
            draining: list[asyncio.Task[None]] = []

            def not_serving() -> None:  # the drain: health probes turn NOT_SERVING, like /ready
                shutdown = health_servicer.enter_graceful_shutdown
                draining.append(loop.create_task(shutdown()))

            hooks = getattr(app.state, "drain_hooks", [])
            app.state.drain_hooks = [*hooks, lambda: loop.call_soon_threadsafe(not_serving)]
            try:
                yield state
            finally:
                await health_servicer.enter_graceful_shutdown()
                await server.stop(GRACE_S)

    app.router.lifespan_context = lifespan
