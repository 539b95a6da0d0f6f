"""Per-request cost of observability: monitor hooks, the middleware, the prediction log.

Run: .venv/bin/python bench/observability_overhead.py (per call, best of 3 repeats).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import numpy as np

from berth.monitoring import store
from berth.monitoring.metrics import Metrics
from berth.monitoring.monitor import Monitor
from berth.monitoring.predlog import PredictionLog
from berth.monitoring.reference import reference_statistics
from berth.server.observe import ObservabilityMiddleware, RequestObserver
from berth.settings import Settings
from berth.types import ModelCard, Outputs, Signature

N = 20_000
TMP = Path(tempfile.mkdtemp())
ROWS = np.random.default_rng(0).normal(size=(2000, 10))
CARD = ModelCard(
    name="m",
    version=1,
    framework="x",
    format="x",
    artifact="x",
    task="regression",
    signature=Signature(kind="tabular", n_features=10),
    reference=reference_statistics(ROWS, Outputs(values=ROWS.sum(1))),
)
BATCH = ROWS[:1]
OUT = Outputs(values=BATCH.sum(1))


def monitor_hooks(settings: Settings, label: str) -> None:
    monitor = Monitor(settings)
    if monitor.prediction_log is not None:
        monitor.prediction_log.start()
    monitor.loaded(CARD, 0.1)
    t0 = time.perf_counter()
    calls = timeit.repeat(
        lambda: (
            monitor.batch_predicted(CARD, BATCH, OUT, 0.0),
            monitor.predicted(CARD, "r", BATCH, OUT, t0, t0),
        ),
        number=N,
        repeat=3,
    )
    if monitor.prediction_log is not None:
        monitor.prediction_log.close()
    print(f"{label}: {min(calls) / N * 1e6:.1f} us per prediction")


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"x"})


async def _noop(message: Any) -> None:
    pass


async def _receive() -> Any:
    return {"type": "http.request", "body": b""}


async def _loop(target: Any) -> float:
    scope = {"type": "http", "path": "/predict", "method": "POST", "headers": []}
    started = time.perf_counter()
    for _ in range(N):
        await target(dict(scope), _receive, _noop)
    return (time.perf_counter() - started) / N


def middleware() -> None:
    wrapped_app = ObservabilityMiddleware(_app, RequestObserver(Metrics(), access_log_on=False))
    bare = min(asyncio.run(_loop(_app)) for _ in range(3))
    wrapped = min(asyncio.run(_loop(wrapped_app)) for _ in range(3))
    print(f"middleware (no access log): {(wrapped - bare) * 1e6:.1f} us per request")


def prediction_log() -> None:
    state = TMP / "plog"
    plog = PredictionLog(Settings(prediction_log_buffer=200_000), state, Metrics())
    plog._thread = object()  # type: ignore[assignment]  # measure the request-path part alone
    started = time.perf_counter()
    for _ in range(N):
        plog.submit(
            request_id="r",
            model="m",
            version=1,
            outcome="ok",
            latency_ms=1.0,
            batch=BATCH,
            outputs=OUT,
        )
    print(
        f"prediction log submit (request path): {(time.perf_counter() - started) / N * 1e6:.1f} us"
    )
    records = plog._take(limit=None)
    state.mkdir(parents=True, exist_ok=True)
    store.migrate(plog.engine)
    started = time.perf_counter()
    for i in range(0, len(records), 500):
        store.insert_rows(plog.engine, [r.row(plog.fields) for r in records[i : i + 500]])
    per_record = (time.perf_counter() - started) / len(records) * 1e6
    print(
        f"prediction log writer thread, SQLite: {per_record:.1f} us per record (off the request path)"
    )


if __name__ == "__main__":
    monitor_hooks(Settings(state_dir=TMP / "a", prediction_log=False), "metrics + drift window")
    middleware()
    prediction_log()
