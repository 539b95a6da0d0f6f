"""deploy/monitoring: promtool checks, names that exist, and a real Prometheus scraping `berth serve`."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import orjson
import pytest

from berth.monitoring.metrics import Metrics
from berth.registry import Registry
from tests.servers import berth_server, free_port

DEPLOY = Path(__file__).parents[1] / "deploy" / "monitoring"
SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian: apt-get install -y prometheus)")
    return path


def exported_names() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        if family.name.startswith("berth_"):
            names.update(family.name + s for s in SUFFIXES.get(family.type, [""]))
    return names


def test_alerts_and_dashboard_use_only_exported_metrics() -> None:
    known = exported_names()
    for path in (DEPLOY / "alerts.yml", DEPLOY / "grafana-dashboard.json"):
        used = set(re.findall(r"\bberth_[a-z_]+", path.read_text()))
        assert used, path
        assert used <= known, (path.name, sorted(used - known))
    dashboard = orjson.loads((DEPLOY / "grafana-dashboard.json").read_bytes())
    titles = {panel["title"] for panel in dashboard["panels"]}
    for topic in ("Request rate", "5xx error ratio", "Latency p50 / p99", "Drift PSI per feature"):
        assert topic in titles


def test_promtool_checks() -> None:
    promtool = _tool("promtool")
    for args in (
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "tests/alerts_test.yml"],
    ):
        result = subprocess.run(
            [promtool, *args], cwd=DEPLOY, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.e2e
def test_prometheus_scrapes_berth(examples_registry: Registry, tmp_path: Path) -> None:
    prometheus = _tool("prometheus")
    example = examples_registry.card("regression").input_example
    with berth_server(examples_registry.root, "regression") as server:
        for _ in range(6):
            assert httpx.post(f"{server.url}/predict", json=example).status_code == 200
        config = tmp_path / "prometheus.yml"
        shutil.copy(DEPLOY / "alerts.yml", tmp_path / "alerts.yml")
        text = (DEPLOY / "prometheus.yml").read_text()
        text = text.replace("scrape_interval: 15s", "scrape_interval: 1s")
        config.write_text(text.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}"))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        process = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            api = f"http://127.0.0.1:{port}/api/v1"
            query = 'sum(berth_requests_total{model="regression",status_class="2xx"})'
            deadline = time.monotonic() + 30
            result: list[dict[str, object]] = []
            while time.monotonic() < deadline:
                try:
                    body = httpx.get(f"{api}/query", params={"query": query}).json()
                    result = body["data"]["result"]
                except (httpx.TransportError, KeyError, ValueError):
                    result = []
                if result:
                    break
                time.sleep(0.5)
            assert result, (tmp_path / "prometheus.log").read_text()[-2000:]
            assert float(result[0]["value"][1]) == 6  # type: ignore[index]
            rules = httpx.get(f"{api}/rules").json()["data"]["groups"]
            assert {r["name"] for g in rules for r in g["rules"]} >= {
                "BerthHighErrorRate",
                "BerthDataDrift",
                "BerthPredictionLogDrops",
            }
            up = httpx.get(f"{api}/query", params={"query": 'up{job="berth"}'}).json()
            assert up["data"]["result"][0]["value"][1] == "1"
        finally:
            process.terminate()
            process.wait(timeout=15)
            log.close()
