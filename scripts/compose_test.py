"""`make compose-test`: bring up Berth and Prometheus from docker-compose.yml; Prometheus scrapes Berth.

The stack runs with deploy/compose/docker-compose.test.yml on top (images built here, host
loopback); as docker-compose 1.x cannot drop the published ports that host networking forbids,
the merged file (`docker-compose config`) is written to build/compose-test/ without them. Prometheus gets Berth's compose scrape job (deploy/compose/prometheus.yml) with the
target moved to the test's port, and Berth's alert rules; the test waits until Prometheus's HTTP
API reports the Berth target up and a Berth series scraped, then stops the stack.

Usage: .venv/bin/python scripts/compose_test.py
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "compose-test"
PROJECT = "berth-compose-test"
FILES = ["-f", "docker-compose.yml", "-f", "deploy/compose/docker-compose.test.yml"]

failures: list[str] = []
timings: dict[str, float] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check(condition: bool, what: str) -> None:
    print(f"    {'ok  ' if condition else 'FAIL'} {what}", flush=True)
    if not condition:
        failures.append(what)


def step(name: str, command: list[str], env: dict[str, str]) -> None:
    print(f"--> {name}", flush=True)
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=env, check=False)
    timings[name] = round(time.monotonic() - started, 1)
    if result.returncode != 0:
        sys.exit(f"FAILED: {name} (exit {result.returncode})")


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def prometheus_config(berth_port: int) -> None:
    """The compose scrape config, aimed at the test's Berth, scraping every second."""
    config = yaml.safe_load((ROOT / "deploy/compose/prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "berth")
    job["static_configs"][0]["targets"] = [f"127.0.0.1:{berth_port}"]
    (WORK / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))


def merge(env: dict[str, str], target: Path) -> None:
    """docker-compose.yml with the test overrides, minus published ports (host networking)."""
    print("--> docker-compose config (merged, without ports)", flush=True)
    result = subprocess.run(
        ["docker-compose", "-p", PROJECT, *FILES, "config"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        sys.exit(f"FAILED: docker-compose config\n{result.stderr}")
    config = yaml.safe_load(result.stdout)
    for service in config["services"].values():
        service.pop("ports", None)
    target.write_text(yaml.safe_dump(config, sort_keys=False))


def wheel_house(env: dict[str, str]) -> None:
    """Berth's dependencies as wheels in build/wheels, for the offline image build."""
    step(
        "wheel-house (pip download)",
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
         "--only-binary=:all:", "--dest", "build/wheels", ".[sklearn,postgres]", "setuptools>=68"],
        env,
    )  # fmt: skip


def wait_ready(berth: str, timeout: float = 90) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{berth}/ready", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def query(prometheus: str, expr: str) -> list[object]:
    url = f"{prometheus}/api/v1/query?query={urllib.parse.quote(expr)}"
    return get_json(url)["data"]["result"]  # type: ignore[index,no-any-return]


def wait_for_scrape(prometheus: str, berth: str, timeout: float = 60) -> None:
    """Prometheus scraped Berth: the target is up and Berth's series are in, when Berth has a
    /metrics route; before it has one, the scrape reaches Berth and gets its 404."""
    paths = get_json(f"{berth}/openapi.json")["paths"]  # type: ignore[index]
    has_metrics = "/metrics" in paths
    deadline = time.monotonic() + timeout
    target: dict[str, str] = {}
    while time.monotonic() < deadline:
        targets = get_json(f"{prometheus}/api/v1/targets")["data"]["activeTargets"]  # type: ignore[index]
        target = next((t for t in targets if t["labels"]["job"] == "berth"), {})
        scraped = target and not target["lastScrape"].startswith("0001-")
        if scraped and (
            not has_metrics
            or (target["health"] == "up" and query(prometheus, 'count({__name__=~"berth_.+"})'))
        ):
            break
        time.sleep(1)
    check(bool(target), f"Prometheus has the berth target ({target.get('scrapeUrl')})")
    if has_metrics:
        check(target.get("health") == "up", f"the berth target is up ({target.get('lastError')})")
        check(bool(query(prometheus, 'up{job="berth"} == 1')), 'up{job="berth"} == 1')
        series = query(prometheus, 'count({__name__=~"berth_.+"})')
        check(bool(series), f"Berth's series scraped into Prometheus ({series})")
    else:
        print("    note: this build of Berth has no /metrics route; checking the scrape reaches it")
        check(
            "404" in target.get("lastError", ""),
            f"Prometheus scraped Berth and got its 404 ({target.get('lastError')})",
        )


def main() -> None:
    started = time.monotonic()
    env = {**os.environ, "PATH": "/usr/bin:" + os.environ.get("PATH", "")}
    berth_port, prometheus_port = free_port(), free_port()
    env.update(BERTH_TEST_PORT=str(berth_port), PROMETHEUS_TEST_PORT=str(prometheus_port))
    WORK.mkdir(parents=True, exist_ok=True)
    if not shutil.which("docker-compose", path=env["PATH"]):
        step("install docker-compose (apt-get)", ["bash", "-c",
             "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
             "apt-get install -y -qq docker-compose >/dev/null"], env)  # fmt: skip
    step("docker engine", ["bash", "scripts/ensure-dockerd.sh"], env)
    step("local base image", ["bash", "scripts/python-base-image.sh"], env)
    wheel_house(env)
    registry = WORK / "registry"
    step(
        "example model",
        [sys.executable, "-m", "berth.cli", "--registry", str(registry),
         "examples", "train", "intent", "--if-missing"],
        env,
    )  # fmt: skip
    prometheus_config(berth_port)
    merged = WORK / "docker-compose.yml"
    merge(env, merged)
    compose = ["docker-compose", "-p", PROJECT, "--project-directory", ".", "-f", str(merged)]
    step("docker-compose build berth prometheus", [*compose, "build", "berth", "prometheus"], env)
    try:
        step(
            "docker-compose up berth prometheus", [*compose, "up", "-d", "berth", "prometheus"], env
        )
        prometheus = f"http://127.0.0.1:{prometheus_port}"
        berth = f"http://127.0.0.1:{berth_port}"
        ready = wait_ready(berth)
        check(ready, "Berth in the stack is ready")
        if ready:
            scrape_started = time.monotonic()
            wait_for_scrape(prometheus, berth)
            timings["ready to scraped"] = round(time.monotonic() - scrape_started, 1)
        rules = get_json(f"{prometheus}/api/v1/rules")["data"]["groups"]  # type: ignore[index]
        count = sum(len(g["rules"]) for g in rules)
        check(count > 0, f"Prometheus loaded Berth's alert rules ({count} rules)")
    finally:
        subprocess.run([*compose, "logs", "--tail", "20"], cwd=ROOT, env=env, check=False)
        step("docker-compose down", [*compose, "down", "--volumes", "--timeout", "30"], env)
    timings["total"] = round(time.monotonic() - started, 1)
    print("timings:", json.dumps(timings))
    if failures:
        sys.exit(f"compose-test: {len(failures)} check(s) failed")
    print("compose-test: all checks passed")


if __name__ == "__main__":
    main()
