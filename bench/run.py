"""`make bench`: Berth against the in-process limits, a bare ASGI app and its peers, in one run.

Drives every server with wrk on loopback, samples the memory of each server's processes, writes
bench/results.md and prints the ratios of issue 3's goals. Environment knobs:

    BENCH_SECONDS   seconds per measured point (default 10; e.g. 2 while developing)
    BENCH_WORKERS   worker processes of every server (default 2)
    BENCH_PEERS     comma-separated subset of: fastapi, flask, mlserver (default all three)
    BENCH_PORT      first port to use (default 18400)

It runs with the Python of Berth's .venv (for the in-process limits) and creates one virtual
environment per peer under bench/.envs, installed from PyPI, with the same scikit-learn version
as Berth's so that all read the same model files.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
ENVS = HERE / ".envs"
WORK = HERE / ".work"
RESULTS = HERE / "results"
BERTH = Path(sys.executable).parent / "berth"

SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
WARMUP = max(1.0, min(3.0, SECONDS / 4))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
PEERS = [p for p in os.environ.get("BENCH_PEERS", "fastapi,flask,mlserver").split(",") if p]
PORT = int(os.environ.get("BENCH_PORT", "18400"))
MODELS = ["intent", "tabular", "regression"]
SINGLE_CONCURRENCY = [1, 16, 64]
BATCH_ROWS = 100
BATCH_CONCURRENCY = 16


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- inputs --------------------------------------------------------------------------------------


def example_rows(name: str, n: int) -> list[Any]:
    """`n` real rows for a model: held-out texts, or feature rows of its scikit-learn data set."""
    if name == "intent":
        from berth.examples.datasets import intent_dataset

        texts, _ = intent_dataset()
        return [texts[i % len(texts)] for i in range(n)]
    from sklearn.datasets import load_breast_cancer, load_diabetes

    data = load_breast_cancer() if name == "tabular" else load_diabetes()
    return [[round(float(v), 5) for v in data.data[i % len(data.data)]] for i in range(n)]


def simple_body(name: str, rows: int) -> bytes:
    """The simple-JSON body (Berth and the tutorial servers): one instance, or instances."""
    key = "text" if name == "intent" else "features"
    items = [{key: row} for row in example_rows(name, rows)]
    return json.dumps(items[0] if rows == 1 else {"instances": items}).encode()


def v2_body(name: str, rows: int) -> bytes:
    """The Open Inference Protocol body MLServer takes."""
    data = example_rows(name, rows)
    if name == "intent":
        tensor = {"name": "text", "shape": [rows], "datatype": "BYTES", "data": data}
    else:
        flat = [v for row in data for v in row]
        tensor = {"name": "x", "shape": [rows, len(data[0])], "datatype": "FP64", "data": flat}
    return json.dumps({"inputs": [tensor]}).encode()


# -- environments --------------------------------------------------------------------------------


def sklearn_pins() -> list[str]:
    import numpy
    import sklearn

    return [f"scikit-learn=={sklearn.__version__}", f"numpy=={numpy.__version__}", "joblib"]


PEER_PACKAGES = {
    "fastapi": ["fastapi", "uvicorn[standard]"],
    "flask": ["flask", "gunicorn"],
    # MLServer 1.7 calls asyncio.get_event_loop() in its workers, which uvloop 0.22+ refuses.
    "mlserver": ["mlserver", "mlserver-sklearn", "uvloop<0.22"],
}


def ensure_env(peer: str) -> Path:
    """bench/.envs/<peer>, created and installed from PyPI unless its requirements are unchanged."""
    env = ENVS / peer
    requirements = PEER_PACKAGES[peer] + sklearn_pins()
    marker = env / ".bench-requirements"
    if marker.exists() and marker.read_text() == "\n".join(requirements):
        return env
    log(f"creating {env.relative_to(PROJECT)}: {' '.join(requirements)}")
    shutil.rmtree(env, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    subprocess.run(
        [str(env / "bin/python"), "-m", "pip", "install", "-q", *requirements], check=True
    )
    marker.write_text("\n".join(requirements))
    return env


def ensure_registry() -> Path:
    """The example models, trained once into bench/.work/registry."""
    root = WORK / "registry"
    subprocess.run(
        [str(BERTH), "--registry", str(root), "examples", "train", *MODELS, "--if-missing"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return root


def model_files(root: Path) -> dict[str, Path]:
    from berth.registry import Registry

    registry = Registry(root)
    files = {}
    for name in MODELS:
        card = registry.card(name, "production")
        files[name] = registry.path(name, card.version) / card.artifact
    return files


# -- in-process limits ---------------------------------------------------------------------------


def in_process(root: Path) -> dict[str, dict[str, float]]:
    """Each model's own `predict` (through Berth's runtime, no HTTP) on 1, 100 and 1,000 rows."""
    from berth.dataplane import DataPlane
    from berth.registry import Registry
    from berth.settings import Settings

    settings = Settings(registry=root, models=MODELS)
    dataplane = DataPlane(Registry(root), settings)
    results: dict[str, dict[str, float]] = {}
    for name in MODELS:
        entry = dataplane.load_now(name, dataplane.served[name].version)
        row: dict[str, float] = {}
        for n in (1, 100, 1000):
            batch = entry.codec.decode_rows(example_rows(name, n))
            entry.model.predict(batch)
            times: list[float] = []
            budget = time.perf_counter() + max(0.5, SECONDS / 5)
            while time.perf_counter() < budget or len(times) < 3:
                started = time.perf_counter()
                entry.model.predict(batch)
                times.append(time.perf_counter() - started)
            median = statistics.median(times)
            row[f"ms_{n}"] = median * 1000
            row[f"rows_per_s_{n}"] = n / median
        results[name] = row
        log(
            f"in-process {name}: 1 row {row['ms_1']:.2f} ms ({row['rows_per_s_1']:.0f} calls/s), "
            f"100 rows {row['rows_per_s_100']:.0f} rows/s, 1000 rows {row['rows_per_s_1000']:.0f} rows/s"
        )
    return results


# -- servers -------------------------------------------------------------------------------------


@dataclass
class Server:
    """A server under test: how to start it, where it answers, what body each model takes."""

    name: str
    command: list[str]
    ready_url: str
    predict_url: Callable[[str, int], str]
    body: Callable[[str, int], bytes]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = PROJECT
    models: list[str] = field(default_factory=lambda: list(MODELS))
    batch: bool = False


class MemorySampler(threading.Thread):
    """Peak RSS and PSS summed over every process of a process group (the server's session)."""

    def __init__(self, pgid: int) -> None:
        super().__init__(daemon=True)
        self.pgid = pgid
        self.peak_rss = 0
        self.peak_pss = 0
        self.processes = 0
        self._stop_event = threading.Event()

    def pids(self) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.pgid:  # field 5 of stat: process group
                found.append(int(entry.name))
        return found

    def sample(self) -> None:
        rss = pss = 0
        pids = self.pids()
        for pid in pids:
            try:
                text = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            rss += int(re.search(r"^Rss:\s+(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
            pss += int(re.search(r"^Pss:\s+(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
        self.peak_rss = max(self.peak_rss, rss * 1024)
        self.peak_pss = max(self.peak_pss, pss * 1024)
        self.processes = max(self.processes, len(pids))

    def run(self) -> None:
        while not self._stop_event.wait(0.5):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()
        self.sample()


@contextmanager
def running(server: Server) -> Iterator[tuple[float, MemorySampler, Path]]:
    """Start the server in its own session, wait until it is ready; stop the whole group after."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_path = RESULTS / f"{server.name}.log"
    started = time.perf_counter()
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            server.command,
            cwd=server.cwd,
            env={**os.environ, **server.env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    sampler = MemorySampler(process.pid)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{server.name} exited: see {log_path}")
            try:
                with urllib.request.urlopen(server.ready_url, timeout=2) as reply:
                    if reply.status == 200:
                        break
            except urllib.error.HTTPError as exc:
                if exc.code == 404 and "berth" not in server.name and "mlserver" not in server.name:
                    break  # the tutorial servers answer 404 on / once they listen
            except OSError:
                pass
            if time.perf_counter() - started > 180:
                raise RuntimeError(f"{server.name} not ready after 180 s: see {log_path}")
            time.sleep(0.05)
        ready_s = time.perf_counter() - started
        sampler.start()
        yield ready_s, sampler, log_path
    finally:
        sampler.stop()
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wrk(url: str, body: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    """One wrk run; its Lua script prints a JSON summary line."""
    body_file = WORK / "body.json"
    body_file.write_bytes(body)
    threads = 1 if concurrency == 1 else 2
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "20s",
        "-s",
        str(HERE / "post.lua"),
        url,
    ]
    output = subprocess.run(
        command,
        env={**os.environ, "BENCH_BODY_FILE": str(body_file)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in output.splitlines() if x.startswith("BENCH "))
    raw = json.loads(line[len("BENCH ") :])
    seconds_run = raw["duration_us"] / 1e6
    return {
        "rps": raw["requests"] / seconds_run,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "requests": raw["requests"],
        "non2xx": raw["non2xx"] + raw["socket_errors"],
    }


def measure(server: Server) -> dict[str, Any]:
    """Every point of one server: single rows at c1/c16/c64 and, where supported, batches."""
    points: list[dict[str, Any]] = []
    log(f"starting {server.name}")
    with running(server) as (ready_s, sampler, log_path):
        log(f"{server.name} ready in {ready_s:.2f} s")
        for model in server.models:
            plan = [(1, c) for c in SINGLE_CONCURRENCY]
            if server.batch:
                plan.append((BATCH_ROWS, BATCH_CONCURRENCY))
            for rows, concurrency in plan:
                url = server.predict_url(model, rows)
                body = server.body(model, rows)
                wrk(url, body, concurrency, WARMUP)
                result = wrk(url, body, concurrency, SECONDS)
                result.update(model=model, rows=rows, concurrency=concurrency)
                result["rows_per_s"] = result["rps"] * rows
                points.append(result)
                log(
                    f"{server.name} {model} rows={rows} c={concurrency}: "
                    f"{result['rps']:.0f} req/s, p50 {result['p50_ms']:.1f} ms, "
                    f"p99 {result['p99_ms']:.1f} ms, non-2xx {result['non2xx']}"
                )
    return {
        "server": server.name,
        "ready_s": ready_s,
        "peak_rss": sampler.peak_rss,
        "peak_pss": sampler.peak_pss,
        "processes": sampler.processes,
        "points": points,
        "log": str(log_path),
    }


def berth_server(root: Path, port: int, models: list[str], name: str = "berth") -> Server:
    return Server(
        name=name,
        command=[
            str(BERTH),
            "--registry",
            str(root),
            "serve",
            *models,
            "--workers",
            str(WORKERS),
            "--port",
            str(port),
        ],
        env={"BERTH_LOG_FORMAT": "json"},
        ready_url=f"http://127.0.0.1:{port}/ready",
        predict_url=lambda m, rows: f"http://127.0.0.1:{port}/models/{m}/predict"
        + ("/batch" if rows > 1 else ""),
        body=simple_body,
        models=models,
        batch=True,
    )


def bare_server(port: int) -> Server:
    return Server(
        name="bare-asgi",
        command=[
            str(Path(sys.executable).parent / "uvicorn"),
            "--app-dir",
            str(HERE / "peers"),
            "bare_asgi:app",
            "--workers",
            str(WORKERS),
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        ready_url=f"http://127.0.0.1:{port}/",
        predict_url=lambda m, rows: f"http://127.0.0.1:{port}/predict",
        body=simple_body,
        models=["intent"],
    )


def peer_servers(files: dict[str, Path], first_port: int) -> list[Server]:
    spec = ",".join(f"{name}={path}" for name, path in files.items())
    servers = []
    for offset, peer in enumerate(PEERS):
        port = first_port + offset * 10
        env_dir = ensure_env(peer)
        bin_dir = env_dir / "bin"
        if peer == "fastapi":
            servers.append(
                Server(
                    name="tutorial-fastapi",
                    command=[
                        str(bin_dir / "uvicorn"),
                        "tutorial_fastapi:app",
                        "--workers",
                        str(WORKERS),
                        "--port",
                        str(port),
                        "--log-level",
                        "warning",
                        "--no-access-log",
                    ],
                    cwd=HERE / "peers",
                    env={"BENCH_MODELS": spec},
                    ready_url=f"http://127.0.0.1:{port}/",
                    predict_url=lambda m, rows, p=port: f"http://127.0.0.1:{p}/models/{m}/predict",
                    body=simple_body,
                )
            )
        elif peer == "flask":
            servers.append(
                Server(
                    name="tutorial-flask-gunicorn",
                    command=[
                        str(bin_dir / "gunicorn"),
                        "-w",
                        str(WORKERS),
                        "-b",
                        f"127.0.0.1:{port}",
                        "tutorial_flask:app",
                    ],
                    cwd=HERE / "peers",
                    env={"BENCH_MODELS": spec},
                    ready_url=f"http://127.0.0.1:{port}/",
                    predict_url=lambda m, rows, p=port: f"http://127.0.0.1:{p}/models/{m}/predict",
                    body=simple_body,
                )
            )
        elif peer == "mlserver":
            folder = mlserver_folder(files, port)
            servers.append(
                Server(
                    name="mlserver",
                    command=[str(bin_dir / "mlserver"), "start", str(folder)],
                    cwd=folder,
                    ready_url=f"http://127.0.0.1:{port}/v2/health/ready",
                    predict_url=lambda m, rows, p=port: f"http://127.0.0.1:{p}/v2/models/{m}/infer",
                    body=v2_body,
                )
            )
    return servers


def mlserver_folder(files: dict[str, Path], port: int) -> Path:
    """MLServer's settings.json and one model-settings.json per model (its sklearn runtime)."""
    folder = WORK / "mlserver"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    settings = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": port + 1,
        "metrics_port": port + 2,
        "parallel_workers": WORKERS,
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    for name, path in files.items():
        (folder / name).mkdir()
        model = {
            "name": name,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": str(path)},
        }
        (folder / name / "model-settings.json").write_text(json.dumps(model))
    return folder


# -- report --------------------------------------------------------------------------------------


def machine_load() -> dict[str, Any]:
    load1, load5, load15 = os.getloadavg()
    return {
        "loadavg": [round(load1, 2), round(load5, 2), round(load15, 2)],
        "cpus": os.cpu_count(),
        "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


def point(result: dict[str, Any], model: str, rows: int, concurrency: int) -> dict[str, Any]:
    for p in result["points"]:
        if (p["model"], p["rows"], p["concurrency"]) == (model, rows, concurrency):
            return dict(p)
    raise KeyError((result["server"], model, rows, concurrency))


def goals(data: dict[str, Any]) -> list[tuple[str, float, str, bool]]:
    """(what, measured ratio or value, goal, met) for every goal of the issue."""
    berth, bare = data["berth"], data["bare"]
    peers = data["peers"]
    inproc = data["in_process"]
    rows: list[tuple[str, float, str, bool]] = []
    bare64 = bare["points"][-1]
    for model in MODELS:
        b64 = point(berth, model, 1, 64)
        ratio = b64["rps"] / bare64["rps"]
        rows.append((f"{model}: c64 req/s / bare-ASGI c64", ratio, ">= 0.40", ratio >= 0.40))
        if peers:
            best = max(peers, key=lambda r: point(r, model, 1, 64)["rps"])
            best_rps = point(best, model, 1, 64)["rps"]
            ratio = b64["rps"] / best_rps
            if model in ("intent", "tabular"):
                rows.append(
                    (f"{model}: c64 req/s / best peer ({best['server']})", ratio, ">= 5", ratio >= 5)
                )
            else:
                rows.append(
                    (f"{model}: c64 req/s / best peer ({best['server']})", ratio, "(no goal)", True)
                )
            best_p99 = min(point(r, model, 1, 64)["p99_ms"] for r in peers)
            rows.append(
                (
                    f"{model}: c64 p99 ms, Berth vs lowest peer p99 ({best_p99:.1f} ms)",
                    b64["p99_ms"],
                    f"<= {best_p99:.1f}",
                    b64["p99_ms"] <= best_p99,
                )
            )
        b1 = point(berth, model, 1, 1)
        limit = inproc[model]["ms_1"] + bare["points"][0]["p50_ms"] + 1.0
        rows.append(
            (
                f"{model}: c1 p50 ms (in-process {inproc[model]['ms_1']:.2f} + bare c1 p50 "
                f"{bare['points'][0]['p50_ms']:.2f} + 1)",
                b1["p50_ms"],
                f"<= {limit:.2f}",
                b1["p50_ms"] <= limit,
            )
        )
        batch = point(berth, model, BATCH_ROWS, BATCH_CONCURRENCY)
        ceiling = WORKERS * inproc[model]["rows_per_s_100"]
        ratio = batch["rows_per_s"] / ceiling
        rows.append(
            (
                f"{model}: 100-row c16 rows/s / ({WORKERS} x in-process 100-row rows/s)",
                ratio,
                ">= 0.70",
                ratio >= 0.70,
            )
        )
    ready = data["berth_one_model"]["ready_s"]
    rows.append(("ready seconds, `berth serve tabular` (one model)", ready, "<= 3", ready <= 3))
    fastapi = next((r for r in peers if r["server"] == "tutorial-fastapi"), None)
    if fastapi is not None:
        ratio = berth["peak_pss"] / fastapi["peak_pss"]
        rows.append(
            ("peak memory (PSS) Berth / tutorial FastAPI", ratio, "<= 1.25", ratio <= 1.25)
        )
        ratio = berth["peak_rss"] / fastapi["peak_rss"]
        rows.append(("peak memory (RSS sum) Berth / tutorial FastAPI", ratio, "(see note)", True))
    bad = sum(p["non2xx"] for r in [berth, bare, *peers] for p in r["points"])
    rows.append(("non-2xx responses, all points", bad, "== 0", bad == 0))
    return rows


def mib(n: float) -> str:
    return f"{n / 2**20:.0f}"


def write_report(data: dict[str, Any]) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` ({Path(__file__).name}) on {data['load_end']['at']}. "
        f"{SECONDS:g} s per point after a {WARMUP:g} s warm-up; wrk on loopback; "
        f"every server with {WORKERS} workers.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}. Load average (1/5/15 min) at the start "
        f"{data['load_start']['loadavg']}, at the end {data['load_end']['loadavg']}; "
        "other jobs share this machine, so compare ratios within this run, not absolute "
        "numbers across runs.",
        "",
        "## Goals (issue 3)",
        "",
        "| Goal | Measured | Target | Met |",
        "|---|---:|---|---|",
    ]
    for what, value, target, met in data["goals"]:
        lines.append(f"| {what} | {value:.2f} | {target} | {'yes' if met else '**no**'} |")
    lines += [
        "",
        "## In-process limits (the model's `predict` through Berth's runtime, no HTTP)",
        "",
        "| Model | 1 row: ms | 1 row: calls/s | 100 rows: rows/s | 1,000 rows: rows/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for model, r in data["in_process"].items():
        lines.append(
            f"| {model} | {r['ms_1']:.2f} | {r['rows_per_s_1']:.0f} | "
            f"{r['rows_per_s_100']:.0f} | {r['rows_per_s_1000']:.0f} |"
        )
    lines += [
        "",
        "## HTTP servers",
        "",
        "| Server | Model | Rows/request | Concurrency | req/s | rows/s | p50 ms | p99 ms | non-2xx |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    servers = [data["bare"], data["berth"], *data["peers"]]
    for result in servers:
        for p in result["points"]:
            model = "(fixed JSON)" if result["server"] == "bare-asgi" else p["model"]
            lines.append(
                f"| {result['server']} | {model} | {p['rows']} | {p['concurrency']} | "
                f"{p['rps']:.0f} | {p['rows_per_s']:.0f} | {p['p50_ms']:.2f} | "
                f"{p['p99_ms']:.2f} | {p['non2xx']} |"
            )
    lines += [
        "",
        "## Start-up and memory",
        "",
        "| Server | Ready after s | Processes | Peak RSS sum MiB | Peak PSS sum MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for result in [*servers, data["berth_one_model"]]:
        lines.append(
            f"| {result['server']} | {result['ready_s']:.2f} | {result['processes']} | "
            f"{mib(result['peak_rss'])} | {mib(result['peak_pss'])} |"
        )
    stats = data.get("berth_batching") or []
    if stats:
        lines += [
            "",
            "## Berth's batching over the whole run (per worker, from its shutdown log)",
            "",
            "| Model | Worker pid | Requests | Batches | Mean rows | Largest | Mean wait ms |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for s in stats:
            lines.append(
                f"| {s['model']} | {s['pid']} | {s['requests']} | {s['batches']} | "
                f"{s['mean_rows']} | {s['largest_rows']} | {s['mean_wait_ms']} |"
            )
    lines += [
        "",
        "Notes: RSS summed over processes counts pages shared between forked workers once per "
        "process; PSS splits shared pages between the processes that map them, so its sum is the "
        "memory the server really uses. Berth forks its workers after loading the models, the "
        "tutorial servers and MLServer load them in every worker. The peers are measured on "
        "single rows only (their tutorial form has no batch endpoint).",
        "",
    ]
    text = "\n".join(lines)
    (HERE / "results.md").write_text(text)
    return text


def batching_stats(log_path: str) -> list[dict[str, Any]]:
    stats = []
    for line in Path(log_path).read_text(errors="replace").splitlines():
        if line.startswith("{") and '"batching stats"' in line:
            stats.append(json.loads(line))
    return stats


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk (Debian/Ubuntu) or brew install wrk")
    began = time.perf_counter()
    WORK.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"load_start": machine_load()}
    root = ensure_registry()
    files = model_files(root)
    peers = peer_servers(files, PORT + 100)  # creates the environments first (slow, once)
    data["in_process"] = in_process(root)
    data["bare"] = measure(bare_server(PORT))
    data["berth"] = measure(berth_server(root, PORT + 10, MODELS))
    data["berth_batching"] = batching_stats(data["berth"]["log"])
    one = berth_server(root, PORT + 20, ["tabular"], name="berth (tabular only)")
    with running(one) as (ready_s, sampler, _):
        sampler.sample()
    data["berth_one_model"] = {
        "server": one.name,
        "ready_s": ready_s,
        "peak_rss": sampler.peak_rss,
        "peak_pss": sampler.peak_pss,
        "processes": sampler.processes,
    }
    data["peers"] = [measure(server) for server in peers]
    data["load_end"] = machine_load()
    data["goals"] = goals(data)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "raw.json").write_text(json.dumps(data, indent=2, default=str))
    write_report(data)
    print()
    print(f"Ratios (issue 3 goals), measured in one run of {time.perf_counter() - began:.0f} s:")
    for what, value, target, met in data["goals"]:
        print(f"  {'ok ' if met else 'NO '} {what}: {value:.2f} (goal {target})")
    print(f"\nTables: {(HERE / 'results.md').relative_to(PROJECT)}")


if __name__ == "__main__":
    main()
