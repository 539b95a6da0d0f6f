"""Multiprocess metric values buffered per event-loop turn (monitoring/buffered.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import asyncio, os, sys, threading
from pathlib import Path
from berth.monitoring.metrics import Metrics, prepare_multiprocess_dir

prepare_multiprocess_dir(Path(sys.argv[1]))
metrics = Metrics()
counter = metrics.traffic_events.labels("m", "switched")

from prometheus_client import CollectorRegistry, multiprocess

def on_disk():  # what another worker's scrape reads now
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    found = [s.value for f in registry.collect() for s in f.samples
             if s.name == "berth_traffic_events_total" and s.labels.get("model") == "m"]
    return found[0] if found else 0.0

async def main():
    for _ in range(3):
        counter.inc()
    print("loop, before the turn:", on_disk(), counter._value.get())
    await asyncio.sleep(0)
    print("loop, after the turn:", on_disk())
    counter.inc()
    print("a scrape in this process:", metrics.samples("berth_traffic_events")[0][2])
    thread = threading.Thread(target=counter.inc)
    thread.start(); thread.join()
    print("thread without a loop:", on_disk())
    counter.inc(10)
    pid = os.fork()  # pending increments are written before the fork, once
    if pid == 0:
        counter.inc(100)
        os._exit(0)
    os.waitpid(pid, 0)
    print("after fork:", on_disk())

asyncio.run(main())
"""


def test_increments_reach_the_files_once_per_loop_turn(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "multiproc")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "loop, before the turn: 0.0 3.0",  # get() counts the pending amount
        "loop, after the turn: 3.0",
        "a scrape in this process: 4.0",  # writes this process's pending amounts first
        "thread without a loop: 5.0",
        "after fork: 115.0",
    ]
