"""Graceful shutdown: on SIGTERM/SIGINT readiness turns false at once, new connections are
accepted for a grace period (while load balancers notice), in-flight requests complete, and the
process exits within a deadline whatever happens."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

__all__ = ["GracefulServer", "drainer"]

log = logging.getLogger("berth.server")

_WATCHDOG_MARGIN_S = 5.0


class GracefulServer(uvicorn.Server):
    """uvicorn's server with a drain phase before it stops accepting connections.

    First signal: `on_drain()` (readiness false), then after `grace_s` uvicorn's own shutdown
    (stop accepting, finish in-flight requests for up to `timeout_graceful_shutdown`, lifespan
    shutdown). A second signal skips the rest of the grace period; a third forces exit. A watchdog
    ends the process if shutdown is still running `grace_s + timeout + 5 s` after the first signal.
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
            self.should_exit = True
        return await super().on_tick(counter)

    @staticmethod
    def _give_up(deadline: float) -> None:
        log.error("shutdown did not finish within %g s: exiting now", deadline)
        logging.shutdown()
        os._exit(1)


def drainer(app: Any) -> Callable[[], None]:
    """What the first signal does to a Berth app: readiness false, `Connection: close` on answers."""

    def drain() -> None:
        app.state.dataplane.ready = False
        app.state.guard.draining = True

    return drain
