"""What one predict request costs Berth, counted in CPU instructions: steadier than time here.

Builds the real app for one example model (as `berth serve` does with several workers: metrics in
multiprocess mode, the prediction log on SQLite in a temporary folder) and calls it as ASGI, no
sockets, with CONCURRENCY requests at a time. After a warm-up it counts the instructions and
cycles of the whole process (every thread: event loop, model threads, prediction-log writer, log
writer) with `perf stat`, and prints them per request. On the shared machines CPU time of the same
code varies by up to 1.5x between runs, instruction counts by under 1%: compare changes with this,
then confirm with `make bench`.

    .venv/bin/python bench/request_cost.py intent --concurrency 64
    .venv/bin/python bench/request_cost.py tabular --rows 100 --concurrency 16 --requests 640
    BERTH_PREDICTION_LOG=false .venv/bin/python bench/request_cost.py intent   # settings apply
    .venv/bin/python bench/request_cost.py intent --access-log   # JSON access lines to a file

Where `perf` has no hardware counters (some VMs), count instructions with callgrind instead, at
two request counts (the warm-up is the same for both; their difference is the measured requests):

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/tmp/a.out \\
        .venv/bin/python bench/request_cost.py intent --requests 640       # ~1.5 min each
    # ... the same with --requests 1920 into /tmp/b.out; then
    # (total of b - total of a) / 1280 = instructions per request (~573k for intent c64)

Needs `make bench`'s registry (bench/.work/registry; `make bench` or `berth --registry
bench/.work/registry examples train intent tabular regression`) and Linux `perf` (without it,
only CPU time is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import WORK, simple_body  # noqa: E402  (bench/run.py: the same request bodies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["intent", "tabular", "regression"])
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=6400, help="measured requests")
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="write JSON access lines (to a file in the temporary folder), as `berth serve` does",
    )
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="berth-cost-"))
    os.environ.setdefault("BERTH_STATE_DIR", str(state / "state"))
    from berth.monitoring.metrics import prepare_multiprocess_dir

    prepare_multiprocess_dir(state / "metrics")
    from berth.server.app import create_app
    from berth.settings import Settings

    settings = Settings(registry=WORK / "registry", models=[args.model], access_log=args.access_log)
    if args.access_log:
        from berth.logs import configure_logging

        lines = (state / "access.log").open("w")
        configure_logging(settings.model_copy(update={"log_format": "json"}), lines)
    app = create_app(settings)
    try:
        asyncio.run(_measure(app, args))
    finally:
        shutil.rmtree(state, ignore_errors=True)


async def _measure(app: Any, args: argparse.Namespace) -> None:
    body = simple_body(args.model, args.rows)
    path = f"/models/{args.model}/predict" + ("/batch" if args.rows > 1 else "")
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "root_path": "",
        "scheme": "http",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
        "query_string": b"",
        "http_version": "1.1",
    }

    async def request() -> None:
        sent = False
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:  # the client stays connected until the answer
                await asyncio.Event().wait()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(dict(scope), receive, send)
        if status != [200]:
            raise SystemExit(f"the server answered {status}")

    async def wave(count: int) -> None:
        done = 0
        while done < count:
            await asyncio.gather(*(request() for _ in range(args.concurrency)))
            done += args.concurrency

    lifespan_in: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    lifespan_out: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    lifespan = asyncio.create_task(
        app(
            {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
            lifespan_in.get,
            lifespan_out.put,
        )
    )
    await lifespan_in.put({"type": "lifespan.startup"})
    await lifespan_out.get()
    await wave(max(args.concurrency * 20, args.requests // 5))  # warm-up
    perf = _start_perf()
    cpu, wall = time.process_time(), time.perf_counter()
    await wave(args.requests)
    requests = -(-args.requests // args.concurrency) * args.concurrency
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    counts = _stop_perf(perf)
    await lifespan_in.put({"type": "lifespan.shutdown"})
    await lifespan_out.get()
    await lifespan
    print(
        f"{args.model}, {args.rows} row(s) per request, {args.concurrency} at a time, "
        f"{requests} requests: CPU {cpu / requests * 1e6:.0f} µs per request "
        f"(wall {wall / requests * 1e6:.0f} µs)"
    )
    for event, value in counts.items():
        print(f"  {event}: {value / requests / 1000:,.0f}k per request")


def _start_perf() -> subprocess.Popen[str] | None:
    if shutil.which("perf") is None:
        return None
    perf = subprocess.Popen(
        ["perf", "stat", "-x", ",", "-e", "instructions,cycles", "-p", str(os.getpid())],
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.3)  # attached to every thread before the measured requests start
    return perf


def _stop_perf(perf: subprocess.Popen[str] | None) -> dict[str, float]:
    if perf is None:
        return {}
    perf.send_signal(signal.SIGINT)
    _, report = perf.communicate(timeout=30)
    counts = {}
    for line in report.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].isdigit():
            counts[fields[2]] = float(fields[0])
    return counts


if __name__ == "__main__":
    main()
