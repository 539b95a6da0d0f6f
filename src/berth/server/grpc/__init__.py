"""The Open Inference Protocol over gRPC, served beside the HTTP app (needs `berth[grpc]`)."""

from __future__ import annotations

from berth.errors import MissingExtra

try:
    import grpc  # noqa: F401
    import grpc_health  # noqa: F401
    import grpc_reflection  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise MissingExtra(f"gRPC serving needs {exc.name}: pip install 'berth[grpc]'") from exc

from berth.server.grpc.server import check_port, serve_alongside, start_grpc_server

__all__ = ["check_port", "serve_alongside", "start_grpc_server"]
