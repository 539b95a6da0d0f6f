"""`berth serve --workers N`: load the models once, then fork N uvicorn workers onto one socket.

Forking after loading (rather than uvicorn's own `workers=`, which spawns fresh interpreters that
each load every model) lets the workers share the loaded models' memory pages copy-on-write and
makes start-up as fast as one load. The parent only supervises: it restarts a worker that dies and
passes SIGTERM/SIGINT on to all of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from types import FrameType

import uvicorn

from berth.dataplane import DataPlane
from berth.logs import configure_logging, drain
from berth.settings import Settings

__all__ = ["bind_socket", "serve_workers"]

log = logging.getLogger("berth.server")

_RESTART_WINDOW_S = 10.0
_MAX_QUICK_RESTARTS = 5


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket the forked workers inherit and all accept on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app: object, settings: Settings) -> uvicorn.Config:
    """The one uvicorn configuration (uvloop and httptools are picked up when installed)."""
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=30,
    )


def _worker(config: uvicorn.Config, sock: socket.socket, settings: Settings) -> None:
    """Body of a forked worker: serve on the inherited socket, then exit without returning."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        configure_logging(settings)
        log.info("worker started", extra={"pid": os.getpid()})
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
        code = 0 if server.started else 3
    finally:
        drain()
        os._exit(code)


def serve_workers(settings: Settings, dataplane: DataPlane, app: object) -> None:
    """Load every served model in this process, fork `settings.workers` workers, supervise them."""
    started = time.perf_counter()
    dataplane.preload()
    log.info(
        "models loaded before forking",
        extra={"workers": settings.workers, "load_s": round(time.perf_counter() - started, 3)},
    )
    config = uvicorn_config(app, settings)
    sock = bind_socket(settings.host, settings.port)
    workers: dict[int, float] = {}
    stopping = False

    def fork() -> None:
        drain()  # no writer thread may hold a lock across fork
        pid = os.fork()
        if pid == 0:
            _worker(config, sock, settings)
        configure_logging(settings)
        workers[pid] = time.monotonic()

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(settings.workers):
        fork()
    quick_restarts = 0
    while workers:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        born = workers.pop(pid, None)
        if born is None or stopping:
            continue
        code = os.waitstatus_to_exitcode(status)
        quick_restarts = quick_restarts + 1 if time.monotonic() - born < _RESTART_WINDOW_S else 0
        if quick_restarts > _MAX_QUICK_RESTARTS:
            log.error("workers keep exiting at start; stopping", extra={"exit_code": code})
            stop(signal.SIGTERM, None)
            continue
        log.warning("worker exited; starting another", extra={"pid": pid, "exit_code": code})
        fork()
    sock.close()
