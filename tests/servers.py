"""Start a real `berth serve` process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

BERTH = [sys.executable, "-m", "berth.cli"]
REPO = Path(__file__).resolve().parents[1]  # so that `tests.fakes` imports in the server process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def berth_server(
    registry: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
    ca: Path | None = None,
) -> Iterator[RunningServer]:
    """Run `berth --registry REGISTRY serve ARGS --port <free>` until the block ends; waits for /ready.

    `ca`: the server speaks HTTPS with a certificate this CA file verifies.
    """
    port = free_port()
    log_path = registry.parent / f"server-{port}.log"
    full_env = {**os.environ, "BERTH_LOG_FORMAT": "json", **(env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                *BERTH,
                "--registry",
                str(registry),
                "serve",
                *args,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    scheme = "https" if ca else "http"
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca)) if ca else True
    server = RunningServer(f"{scheme}://127.0.0.1:{port}", port, process, log_path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"berth serve exited with {process.returncode}:\n{server.log()}")
            try:
                ready = httpx.get(f"{server.url}/ready", timeout=1.0, verify=verify)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"berth serve not ready after {timeout}s:\n{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
