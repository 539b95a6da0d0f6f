"""A bounded soak and overload run on loopback (`make soak`; not part of `make test`).

1. soak: a steady open-loop rate for `--seconds`: zero failed requests, stable server memory;
2. overload: `--overload-workers` clients as fast as they can for 20 s (several times what the
   server sustains): only 200 or 503 answers (never another 5xx, never a client timeout);
3. recovery: the steady rate again for 10 s: every request succeeds from the first second.

Prints one JSON line per phase and exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from berth.examples.train import EXAMPLES, register_example
from berth.registry import Registry
from berth.settings import Settings
from tests.servers import berth_server


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _phase(
    url: str, body: Path, pid: int, seconds: float, concurrency: int, qps: float
) -> dict[str, Any]:
    """`hey` for `seconds` with `concurrency` workers, each at most `qps` requests/s (0: no cap),
    sampling the server's memory every 5 s."""
    command = [
        "hey", "-z", f"{seconds:g}s", "-c", str(concurrency), "-q", f"{qps:g}", "-t", "10",
        "-m", "POST", "-T", "application/json", "-D", str(body), url,
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    memory = [_rss_kib(pid)]
    while process.poll() is None:
        time.sleep(5 if seconds > 10 else 0.5)
        memory.append(_rss_kib(pid))
    output = process.stdout.read() if process.stdout else ""
    outcomes = {code: int(n) for code, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", output)}
    errors = output.split("Error distribution:")[1] if "Error distribution:" in output else ""
    for n, error in re.findall(r"\[(\d+)\]\s+(.+)", errors):
        kind = "timeout" if "Timeout" in error or "deadline" in error else "error"
        outcomes[kind] = outcomes.get(kind, 0) + int(n)
    latency = dict(re.findall(r"(\d+)% in ([\d.]+) secs", output))
    return {
        "seconds": seconds,
        "concurrency": concurrency,
        "qps_per_worker": qps,
        "requests_per_s": float((re.findall(r"Requests/sec:\s+([\d.]+)", output) or ["0"])[0]),
        "outcomes": outcomes,
        "p50_ms": round(float(latency.get("50", 0)) * 1000, 1),
        "p99_ms": round(float(latency.get("99", 0)) * 1000, 1),
        "rss_kib_first": memory[0],
        "rss_kib_max": max(memory),
        "rss_kib_last": memory[-1],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=40.0, help="steady requests per second")
    parser.add_argument("--seconds", type=float, default=180.0, help="length of the soak phase")
    parser.add_argument("--workers", type=int, default=4, help="concurrent clients, steady")
    parser.add_argument(
        "--overload-workers", type=int, default=128, help="concurrent clients without a rate cap"
    )
    parser.add_argument("--max-in-flight", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "registry"
        registry = Registry(root)
        register_example(registry, "tabular", EXAMPLES["tabular"](), Settings(registry=root))
        body = registry.card("tabular").input_example
        env = {"BERTH_MAX_IN_FLIGHT": str(args.max_in_flight), "BERTH_LOG_LEVEL": "warning"}
        with berth_server(root, "tabular", env=env) as server:
            url = f"{server.url}/predict"
            pid = server.process.pid

            body_file = Path(folder) / "body.json"
            body_file.write_bytes(orjson.dumps(body))
            steady = (args.workers, args.rate / args.workers)
            _phase(url, body_file, pid, 5, *steady)  # warm-up, not judged
            soak = _phase(url, body_file, pid, args.seconds, *steady)
            over = _phase(url, body_file, pid, 20, args.overload_workers, 0)
            recovery = _phase(url, body_file, pid, 10, *steady)
    failures = []
    if set(soak["outcomes"]) != {"200"}:
        failures.append(f"soak: not every request succeeded: {soak['outcomes']}")
    if soak["rss_kib_last"] > soak["rss_kib_first"] * 1.2 + 10_240:
        failures.append("soak: server memory grew by more than 20% (+10 MiB)")
    if not set(over["outcomes"]) <= {"200", "429", "503"} or "503" not in over["outcomes"]:
        failures.append(f"overload: expected only 200 and 503 answers: {over['outcomes']}")
    if set(recovery["outcomes"]) != {"200"}:
        failures.append(f"recovery: not every request succeeded: {recovery['outcomes']}")
    for name, phase in (("soak", soak), ("overload", over), ("recovery", recovery)):
        sys.stdout.write(orjson.dumps({"phase": name, **phase}).decode() + "\n")
    for failure in failures:
        sys.stdout.write(f"FAILED {failure}\n")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
