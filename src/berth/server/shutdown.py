"""Graceful shutdown: on SIGTERM/SIGINT readiness turns false at once, new connections are
accepted for a grace period (while load balancers notice), in-flight requests complete, and the
process exits within a deadline whatever happens.

Closing a listener loses requests in two places that uvicorn leaves open, and under load both
happen: the kernel resets every connection still waiting in the listen backlog, and uvicorn
closes every connection with no request in progress, including one accepted a moment ago whose
request is on its way. So before the listener closes, `GracefulServer` accepts what the backlog
holds, and `HTTP_PROTOCOL` gives a connection that has sent nothing yet a moment to send its
request; both are answered, then closed. What is refused is only what arrives after the close.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

__all__ = ["HTTP_PROTOCOL", "GracefulServer", "drainer"]

log = logging.getLogger("berth.server")

_WATCHDOG_MARGIN_S = 5.0
_FIRST_REQUEST_WAIT_S = 1.0
_DUPLICATE_SIGNAL_S = 1.0


class _SpareNewConnections:
    """Mixed into uvicorn's HTTP protocol: shutdown waits for a new connection's first request."""

    cycle: Any
    transport: Any
    loop: Any

    def shutdown(self) -> None:
        if self.cycle is None and not self.transport.is_closing():  # accepted, no request yet
            self.loop.call_later(_FIRST_REQUEST_WAIT_S, self._shutdown_now)
            return
        super().shutdown()  # type: ignore[misc]

    def _shutdown_now(self) -> None:
        if not self.transport.is_closing():
            super().shutdown()  # type: ignore[misc]


HTTP_PROTOCOL: type[Any] = type("SparingHTTPProtocol", (_SpareNewConnections, AutoHTTPProtocol), {})
"""uvicorn's HTTP protocol (httptools or h11) with `_SpareNewConnections`, for `Config(http=...)`."""


class GracefulServer(uvicorn.Server):
    """uvicorn's server with a drain phase before it stops accepting connections.

    First signal: `on_drain()` (readiness false), then after `grace_s` uvicorn's own shutdown
    (stop accepting, finish in-flight requests for up to `timeout_graceful_shutdown`, lifespan
    shutdown). A second signal skips the rest of the grace period; a third forces exit. A watchdog
    ends the process if shutdown is still running `grace_s + timeout + 5 s` after the first signal.
    A signal within a second of the first is the same request delivered twice (a worker gets
    Ctrl+C from the terminal and again from its supervisor) and changes nothing.
    """

    def __init__(
        self, config: uvicorn.Config, on_drain: Callable[[], None], grace_s: float
    ) -> None:
        super().__init__(config)
        self.on_drain = on_drain
        self.grace_s = grace_s
        self.drain_started: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_started is not None:
            if time.monotonic() - self.drain_started >= _DUPLICATE_SIGNAL_S:
                super().handle_exit(sig, frame)
            return
        self.drain_started = time.monotonic()
        self._captured_signals.append(sig)
        self.on_drain()
        deadline = self.grace_s + (self.config.timeout_graceful_shutdown or 0) + _WATCHDOG_MARGIN_S
        log.info(
            "%s received: readiness is false; closing the listener in %g s, exiting within %g s",
            signal.Signals(sig).name,
            self.grace_s,
            deadline,
        )
        watchdog = threading.Timer(deadline, self._give_up, args=(deadline,))
        watchdog.daemon = True
        watchdog.start()
        if not self.grace_s:
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if (
            self.drain_started is not None
            and not self.should_exit
            and time.monotonic() - self.drain_started >= self.grace_s
        ):
            log.info("grace period over: closing the listener")
            self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        queued = _take_backlog(self.servers)
        for server in self.servers:  # at once: a connection arriving now would be reset
            server.close()
        for sock in sockets or []:
            sock.close()
        if queued:
            log.info("answering %d connections queued when the listener closed", len(queued))
            await asyncio.gather(*(self._adopt(conn) for conn in queued))
        await super().shutdown(sockets)  # closing again is a no-op; then uvicorn's own steps

    async def _adopt(self, conn: socket.socket) -> None:
        """Serve a connection taken from the backlog like one the server accepted itself."""
        config = self.config
        protocol: Callable[..., asyncio.Protocol] = config.http_protocol_class
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                functools.partial(
                    protocol,
                    config=config,
                    server_state=self.server_state,
                    app_state=self.lifespan.state,
                ),
                conn,
                ssl=config.ssl,
            )
        except OSError:  # the client went away (a TLS handshake failure is an OSError too)
            conn.close()

    @staticmethod
    def _give_up(deadline: float) -> None:
        log.error("shutdown did not finish within %g s: exiting now", deadline)
        logging.shutdown()
        os._exit(1)


def drainer(app: Any) -> Callable[[], None]:
    """What the first signal does to a Berth app: readiness false, `Connection: close` on answers,
    and the functions in `app.state.drain_hooks` (called in the signal handler: keep them short)."""

    def drain() -> None:
        app.state.dataplane.ready = False
        app.state.guard.draining = True
        for hook in getattr(app.state, "drain_hooks", ()):
            hook()

    return drain


def _take_backlog(servers: list[Any]) -> list[socket.socket]:
    """Accept every connection waiting in the servers' listen backlogs, without blocking."""
    taken: list[socket.socket] = []
    for server in servers:
        for listener in server.sockets or ():
            # a duplicate descriptor of the same listening socket: closing it leaves the loop's own
            with socket.fromfd(listener.fileno(), listener.family, listener.type) as sock:
                sock.setblocking(False)
                while True:
                    try:
                        conn, _ = sock.accept()
                    except ConnectionAbortedError:  # gave up while queued: skip it
                        continue
                    except OSError:  # nothing left (EAGAIN), or no descriptor to take it with
                        break
                    conn.setblocking(False)
                    taken.append(conn)
    return taken
