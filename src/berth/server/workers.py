"""`berth serve --workers N`: load the models once, then fork N uvicorn workers onto one socket.

Forking after loading (rather than uvicorn's own `workers=`, which spawns fresh interpreters that
each load every model) lets the workers share the loaded models' memory pages copy-on-write and
makes start-up as fast as one load. Each worker accepts on its own SO_REUSEPORT socket, so the
kernel spreads connections evenly (on one shared socket, the worker that wakes first takes a whole
burst of connections). The parent only supervises: it restarts a worker that dies, on the same
socket, and passes SIGTERM/SIGINT on to all of them. A worker holds only its own socket, and the
parent closes its copies when it stops, so a socket stops accepting when its worker closes it.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import time
from types import FrameType

import uvicorn

from berth.dataplane import DataPlane
from berth.errors import InvalidInput
from berth.logs import configure_logging, drain
from berth.monitoring.metrics import mark_worker_dead
from berth.server.shutdown import HTTP_PROTOCOL, GracefulServer, drainer
from berth.settings import Settings

__all__ = ["bind_sockets", "serve_workers"]

log = logging.getLogger("berth.server")

_RESTART_WINDOW_S = 10.0
_MAX_QUICK_RESTARTS = 5


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """One listening socket per worker, all on one port (SO_REUSEPORT, so the kernel spreads new
    connections evenly); where the system lacks it, one socket that all workers share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    reuse_port = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")
    sockets: list[socket.socket] = []
    for _ in range(count if reuse_port else 1):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        port = sock.getsockname()[1]  # port 0: the others join the port the first one got
        sock.listen(2048)
        sock.set_inheritable(True)
        sockets.append(sock)
    return sockets * count if len(sockets) == 1 else sockets


def uvicorn_config(app: object, settings: Settings) -> uvicorn.Config:
    """The one uvicorn configuration (uvloop and httptools are picked up when installed)."""
    cert, key = tls_files(settings)
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.host,
        port=settings.port,
        http=HTTP_PROTOCOL,
        log_config=None,
        access_log=False,
        lifespan="on",
        ws="none",  # no WebSocket routes: the workers need not import a WebSocket library
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_s)),
        ssl_certfile=cert,
        ssl_keyfile=key,
    )


def tls_files(settings: Settings) -> tuple[str | None, str | None]:
    """The certificate and key files for HTTPS, or (None, None) for plain HTTP."""
    cert, key = settings.ssl_certfile, settings.ssl_keyfile
    if cert is None and key is None:
        return None, None
    if cert is None or key is None:
        raise InvalidInput("HTTPS needs both --ssl-certfile and --ssl-keyfile")
    for path in (cert, key):
        if not path.is_file():
            raise InvalidInput(f"TLS file {path} does not exist")
    return str(cert), str(key)


def _worker(config: uvicorn.Config, sock: socket.socket, settings: Settings) -> None:
    """Body of a forked worker: serve on the inherited socket, then exit without returning."""
    code = 1
    try:
        # uvicorn re-raises the signal that stopped it once it has shut down; with the default
        # action that would kill the worker before its last log records are written.
        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        configure_logging(settings)
        log.info("worker started", extra={"pid": os.getpid()})
        server = GracefulServer(config, drainer(config.app), settings.shutdown_grace_s)
        with contextlib.suppress(_Stopped):
            server.run(sockets=[sock])
        code = 0 if server.started else 3
    finally:
        drain()
        os._exit(code)


class _Stopped(Exception):
    """Raised in a worker by SIGTERM or SIGINT outside uvicorn's own handling."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stopped


def serve_workers(settings: Settings, dataplane: DataPlane, app: object) -> None:
    """Load every served model in this process, fork `settings.workers` workers, supervise them."""
    started = time.perf_counter()
    dataplane.preload()
    log.info(
        "models loaded before forking",
        extra={"workers": settings.workers, "load_s": round(time.perf_counter() - started, 3)},
    )
    config = uvicorn_config(app, settings)
    config.load()  # uvicorn's protocol and lifespan modules, imported once for every worker
    config.get_loop_factory()  # and uvloop's
    sockets = bind_sockets(settings.host, settings.port, settings.workers)
    workers: dict[int, tuple[int, float]] = {}  # pid -> (slot, started)
    stopping = False

    def fork(slot: int) -> None:
        drain()  # no writer thread may hold a lock across fork
        gc.freeze()  # keep the loaded models' pages shared: the collector won't write to them
        pid = os.fork()
        if pid == 0:
            for other in set(sockets) - {sockets[slot]}:  # or it would keep them listening
                other.close()
            _worker(config, sockets[slot], settings)
        configure_logging(settings)
        workers[pid] = (slot, time.monotonic())

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for sock in set(sockets):  # no more forks: only the workers' copies keep them listening,
            sock.close()  # so each closes when its worker stops accepting, not when the last exits
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for slot in range(settings.workers):
        fork(slot)
    quick_restarts = 0
    while workers:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        worker = workers.pop(pid, None)
        mark_worker_dead(pid)
        if worker is None or stopping:
            continue
        slot, born = worker
        code = os.waitstatus_to_exitcode(status)
        quick_restarts = quick_restarts + 1 if time.monotonic() - born < _RESTART_WINDOW_S else 0
        if quick_restarts > _MAX_QUICK_RESTARTS:
            log.error("workers keep exiting at start; stopping", extra={"exit_code": code})
            stop(signal.SIGTERM, None)
            continue
        log.warning("worker exited; starting another", extra={"pid": pid, "exit_code": code})
        fork(slot)  # on the same socket: connections queued there are not lost
    for sock in set(sockets):
        sock.close()
