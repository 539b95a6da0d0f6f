"""`/dashboard` in headless Chromium against a real server: no console errors, the models shown."""

from __future__ import annotations

import httpx
import pytest

from berth.registry import Registry
from tests.browser import ARTIFACTS, chromium_or_skip, load, screenshot
from tests.servers import berth_server

pytestmark = pytest.mark.e2e


def test_console_capture_catches_errors() -> None:
    """The check below can fail: a page that throws shows up in the console lines."""
    chromium_or_skip()
    page = load("data:text/html,<p>x</p><script>throw new Error('boom')</script>", budget_ms=500)
    assert any("boom" in line for line in page.console), page.console


def test_dashboard_in_chromium(examples_registry: Registry) -> None:
    chromium_or_skip()
    env = {"BERTH_DRIFT_MIN_ROWS": "10", "BERTH_DRIFT_INTERVAL_S": "1"}
    with berth_server(examples_registry.root, "intent", "regression", env=env) as server:
        example = examples_registry.card("regression").input_example
        for i in range(20):
            httpx.post(f"{server.url}/models/intent/predict", json={"text": f"hello number {i}"})
            httpx.post(f"{server.url}/models/regression/predict", json=example)
        httpx.post(f"{server.url}/models/regression/predict", json={"features": [1]})
        html = httpx.get(f"{server.url}/dashboard")
        assert html.status_code == 200
        assert html.headers["content-type"].startswith("text/html")
        page = load(f"{server.url}/dashboard", budget_ms=7000)
        shot = screenshot(f"{server.url}/dashboard", ARTIFACTS / "dashboard.png", budget_ms=7000)
    assert page.console == [], page.console
    assert 'data-model="intent"' in page.dom
    assert 'data-model="regression"' in page.dom
    assert page.dom.count(">loaded<") == 2
    assert "ready · updated" in page.dom
    assert 'data-feature="text_chars"' in page.dom  # the intent model's drift table
    assert shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
