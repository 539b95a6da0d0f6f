"""`make docker-test`: build Berth's image offline and check the running container end to end.

Steps (each timed): a Docker engine (started if absent), the local Debian base (made once, then
loaded from build/cache), the example models, `berth build intent tabular` (wheel-house here,
build without network), then a container on --network host with a read-only root filesystem:
/ready, predictions, /metrics when the app has that route, the HEALTHCHECK, a non-root user, and
SIGTERM stopping it cleanly within the grace period.

Usage: .venv/bin/python scripts/docker_test.py [--base-image IMAGE] [--keep-image]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "docker-test"
LOCAL_BASE = "local/python-base:bookworm"
TAG = "berth:docker-test"
GRACE_S = 30  # `docker stop -t`, and Berth's default shutdown timeout
SIZE_BUDGET_MB = float(os.environ.get("BERTH_IMAGE_BUDGET_MB", "450"))
ENV = {**os.environ, "PATH": "/usr/bin:" + os.environ.get("PATH", "")}  # Debian's docker client

timings: dict[str, float] = {}
failures: list[str] = []


def step(name: str, command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    print(f"--> {name}", flush=True)
    result = subprocess.run(command, env=ENV, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    timings[name] = round(time.monotonic() - started, 1)
    if result.returncode != 0:
        sys.exit(f"FAILED: {name} (exit {result.returncode})")
    return result  # type: ignore[no-any-return]


def check(condition: bool, what: str) -> None:
    print(f"    {'ok  ' if condition else 'FAIL'} {what}", flush=True)
    if not condition:
        failures.append(what)


def docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], env=ENV, capture_output=True, text=True, check=True
    ).stdout.strip()


def http(method: str, url: str, body: object = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, container: str, timeout: float = 90) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if docker("inspect", "-f", "{{.State.Running}}", container) != "true":
            return False
        try:
            if http("GET", f"{url}/ready")[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def build(base_image: str) -> None:
    step("docker engine", ["bash", str(ROOT / "scripts/ensure-dockerd.sh")])
    if base_image == LOCAL_BASE:
        step("local base image", ["bash", str(ROOT / "scripts/python-base-image.sh"), LOCAL_BASE])
    registry = WORK / "registry"
    berth = [sys.executable, "-m", "berth.cli", "--registry", str(registry)]
    step("example models", [*berth, "examples", "train", "intent", "tabular", "--if-missing"])
    step(
        "berth build (wheel-house + offline build)",
        [*berth, "build", "intent", "tabular", "--tag", TAG, "--base-image", base_image],
    )
    size_mb = int(docker("image", "inspect", "-f", "{{.Size}}", TAG)) / 1e6
    timings["image size (MB)"] = round(size_mb)
    check(size_mb < SIZE_BUDGET_MB, f"image is {size_mb:.0f} MB (budget {SIZE_BUDGET_MB:.0f} MB)")


def check_api(url: str) -> None:
    """Readiness, predictions of both baked-in models, a refused input, /metrics if routed."""
    status, body = http("GET", f"{url}/ready")
    loaded = {m["name"] for m in json.loads(body)["models"] if m["loaded"]}
    check(loaded == {"intent", "tabular"}, f"both baked-in models loaded ({sorted(loaded)})")

    status, body = http(
        "POST", f"{url}/models/intent/predict", {"text": "I want to cancel my subscription"}
    )
    answer = json.loads(body)
    check(
        status == 200 and answer.get("prediction") == "complaint",
        f"intent predicts complaint ({status}, {answer.get('prediction')})",
    )
    card = json.loads((WORK / "registry/tabular/1/model.json").read_text())
    status, body = http("POST", f"{url}/models/tabular/predict", card["input_example"])
    check(
        status == 200 and "probabilities" in json.loads(body),
        f"tabular answers with probabilities ({status})",
    )
    status, _ = http("POST", f"{url}/models/tabular/predict", {"features": [1.0]})
    check(status == 422, f"a wrong input size is refused with 422 ({status})")

    paths = json.loads(http("GET", f"{url}/openapi.json")[1])["paths"]
    if "/metrics" in paths:
        status, body = http("GET", f"{url}/metrics")
        check(
            status == 200 and b"# TYPE" in body,
            f"/metrics answers Prometheus text ({status}, {len(body)} bytes)",
        )
    else:
        print("    skip /metrics: this build of Berth has no such route")


def check_container(name: str) -> None:
    """Non-root, the image's HEALTHCHECK, and the server as PID 1."""
    uid = docker("exec", name, "id", "-u")
    check(uid not in {"", "0"}, f"the server runs as a non-root user (uid {uid})")
    deadline = time.monotonic() + 20
    health = ""
    while time.monotonic() < deadline and health != "healthy":
        health = docker("inspect", "-f", "{{.State.Health.Status}}", name)
        time.sleep(0.5)
    check(health == "healthy", f"the image's HEALTHCHECK reports {health!r}")
    pid1 = docker("exec", name, "cat", "/proc/1/cmdline").replace("\0", " ")
    check("berth" in pid1, f"PID 1 is the server itself ({pid1.strip()})")


def check_shutdown(name: str) -> None:
    """`docker stop`: SIGTERM, then SIGKILL after the grace period; it must exit 0 before."""
    started = time.monotonic()
    docker("stop", "--time", str(GRACE_S), name)
    stop_s = time.monotonic() - started
    timings["SIGTERM to exit"] = round(stop_s, 1)
    state = json.loads(docker("inspect", "-f", "{{json .State}}", name))
    logs = subprocess.run(
        ["docker", "logs", name], env=ENV, capture_output=True, text=True, check=True
    )
    check(
        state["ExitCode"] == 0 and stop_s < GRACE_S,
        f"SIGTERM stops it cleanly: exit {state['ExitCode']} after {stop_s:.1f} s "
        f"(grace {GRACE_S} s)",
    )
    check(
        "Application shutdown complete" in logs.stdout + logs.stderr,
        "the log shows the application shut down (lifespan ran)",
    )


def exercise() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    name = f"berth-docker-test-{port}"
    started = time.monotonic()
    docker(
        "run", "--detach", "--name", name, "--network", "host",
        "--read-only", "--tmpfs", "/tmp",  # as the Helm chart runs it
        "--health-interval", "1s", "--health-start-period", "60s",
        "-e", "BERTH_HOST=127.0.0.1", "-e", f"BERTH_PORT={port}",
        TAG,
    )  # fmt: skip
    try:
        ready = wait_ready(url, name)
        timings["container start to /ready"] = round(time.monotonic() - started, 1)
        check(ready, "/ready answers 200")
        if not ready:
            print(docker("logs", name))
            return
        check_api(url)
        check_container(name)
        check_shutdown(name)
    finally:
        subprocess.run(["docker", "rm", "-f", name], env=ENV, capture_output=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-image", default=os.environ.get("BERTH_BASE_IMAGE", LOCAL_BASE))
    parser.add_argument("--keep-image", action="store_true")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    build(args.base_image)
    try:
        exercise()
    finally:
        if not args.keep_image:
            subprocess.run(["docker", "rmi", TAG], env=ENV, capture_output=True, check=False)
    timings["total"] = round(time.monotonic() - started, 1)
    (WORK / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print("timings:", json.dumps(timings))
    if failures:
        sys.exit(f"docker-test: {len(failures)} check(s) failed: {'; '.join(failures)}")
    print("docker-test: all checks passed")


if __name__ == "__main__":
    main()
