"""Run the app under uvicorn, after loading models so that start-up errors are plain messages."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from rich.console import Console

from berth.dataplane import DataPlane
from berth.logs import configure_logging
from berth.monitoring.metrics import MULTIPROC_ENV, prepare_multiprocess_dir
from berth.registry import Registry
from berth.server.app import create_app
from berth.server.arenas import limit_malloc_arenas
from berth.server.shutdown import GracefulServer, drainer
from berth.settings import Settings

__all__ = ["run"]


def _banner(settings: Settings, dataplane: DataPlane) -> None:
    scheme = "https" if settings.ssl_certfile else "http"
    base = f"{scheme}://{settings.host}:{settings.port}"
    console = Console(stderr=True)
    console.print(
        f"[bold]Berth[/] serving {', '.join(c.ref for c in dataplane.served.values())} on {base}"
    )
    console.print(f"  docs:   {base}/docs")
    if settings.grpc_port:
        tls = ", TLS" if settings.ssl_certfile else ""
        console.print(
            f"  grpc:   {settings.host}:{settings.grpc_port} (inference.GRPCInferenceService{tls})"
        )
    for card in dataplane.served.values():
        if card.input_example is not None:
            import orjson

            body = orjson.dumps(card.input_example).decode()
            console.print(
                f"  try:    curl -s {base}/models/{card.name}/predict -H 'Content-Type: application/json' "
                f"-d '{body}'",
                highlight=False,
                soft_wrap=True,
            )


def run(settings: Settings) -> None:
    """Serve the configured models until interrupted; a signal drains them first (shutdown.py)."""
    from berth.server.workers import tls_files, uvicorn_config

    tls_files(settings)  # refuse a bad TLS setting before anything starts
    limit_malloc_arenas()  # before any thread of ours allocates
    configure_logging(settings)
    if settings.workers > 1:  # before any metric exists: every worker writes to the shared folder
        shared = (
            os.environ.get(MULTIPROC_ENV) or f"{tempfile.gettempdir()}/berth-metrics-{os.getpid()}"
        )
        prepare_multiprocess_dir(Path(shared))
    dataplane = DataPlane(Registry.from_settings(settings), settings)
    app = create_app(settings, dataplane)
    if settings.grpc_port:
        from berth.server.grpc import serve_alongside  # needs the grpc extra

        serve_alongside(app, settings, dataplane)
    _banner(settings, dataplane)
    if settings.workers > 1:
        from berth.server.workers import serve_workers

        serve_workers(settings, dataplane, app)
        return
    config = uvicorn_config(app, settings)
    GracefulServer(config, on_drain=drainer(app), grace_s=settings.shutdown_grace_s).run()
