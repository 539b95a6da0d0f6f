"""Multiprocess mode switched on after import, then forked workers: one render sums them all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import os, sys
from pathlib import Path
from berth.monitoring.metrics import Metrics, mark_worker_dead, prepare_multiprocess_dir

prepare_multiprocess_dir(Path(sys.argv[1]))  # after berth (and prometheus_client) was imported
metrics = Metrics()
children = []
for n in (3, 4):
    pid = os.fork()
    if pid == 0:
        for _ in range(n):
            metrics.requests.labels("m", "1", "", "/predict", "2xx").inc()
        metrics.in_flight.inc()  # a request still in flight when the worker dies
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
written = {f.name for f in Path(sys.argv[1]).iterdir()}
print(all(f"counter_{pid}.db" in written for pid in children))
text = metrics.render().decode()
print([l for l in text.splitlines() if l.startswith(("berth_requests_total", "berth_requests_in"))])
for pid in children:
    mark_worker_dead(pid)
text = metrics.render().decode()
print([l for l in text.splitlines() if l.startswith("berth_requests_in")])
"""


def test_fork_after_import_sums_workers(tmp_path: Path) -> None:
    folder = tmp_path / "multiproc"
    folder.mkdir()
    (folder / "stale_counter_123.db").write_bytes(b"left over from an earlier run")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    files_per_worker, first, second = result.stdout.splitlines()
    assert files_per_worker == "True"  # each child wrote under its own pid (cached, see metrics.py)
    assert (
        'berth_requests_total{endpoint="/predict",model="m",status_class="2xx",variant="",version="1"} 7.0'
        in first
    )
    assert "berth_requests_in_flight 2.0" in first
    assert "berth_requests_in_flight 0.0" in second  # the dead workers' gauges are gone
    assert not (folder / "stale_counter_123.db").exists()
