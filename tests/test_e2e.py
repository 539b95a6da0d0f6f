"""End to end: a real `berth serve` process on a loopback port, called the way users call it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from berth.registry import Registry
from tests.servers import berth_server

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_curl_lines() -> list[str]:
    lines = re.findall(
        r"^curl -s http://127\.0\.0\.1:8000\S* .*$", README.read_text(), flags=re.MULTILINE
    )
    assert len(lines) >= 6, "the README's quick start should show its curl examples"
    return lines


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_examples_against_a_real_server(examples_registry: Registry) -> None:
    expected = ["complaint", "greeting", "question", "praise"]
    with berth_server(examples_registry.root, "intent") as server:
        answers = []
        for line in _readme_curl_lines():
            command = line.replace("http://127.0.0.1:8000", server.url)
            result = subprocess.run(
                ["bash", "-c", command], capture_output=True, text=True, timeout=30, check=True
            )
            answers.append(json.loads(result.stdout))
    assert [a["prediction"] for a in answers[:4]] == expected
    assert [p["prediction"] for p in answers[4]["predictions"]] == ["greeting", "complaint"]
    assert answers[5] == {"error": "text must not be empty", "code": "invalid_input"}


@pytest.mark.e2e
def test_real_server_routes_headers_and_logs(examples_registry: Registry) -> None:
    with berth_server(examples_registry.root, env={"BERTH_DEFAULT_MODEL": "tabular"}) as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/health").json() == {"status": "ok"}
            assert client.get("/ready").json()["ready"] is True
            assert {m["name"] for m in client.get("/models").json()} == {
                "intent",
                "injection",
                "tabular",
                "regression",
            }
            assert client.get("/model/info").json()["name"] == "tabular"
            ok = client.post(
                "/predict", json={"features": [10.0] * 30}, headers={"X-Request-ID": "e2e-1"}
            )
            assert ok.status_code == 200
            assert ok.headers["x-request-id"] == "e2e-1"
            assert ok.json()["prediction"] in {"malignant", "benign"}
            short = client.post("/predict", json={"features": [10.0] * 29})
            assert short.status_code == 422
            assert short.json() == {
                "error": "expected 30 features, got 29",
                "code": "invalid_input",
            }
            regression = client.post(
                "/models/regression/versions/production/predict/batch",
                json={"instances": [[0.0] * 10, [0.05] * 10]},
            )
            assert len(regression.json()["predictions"]) == 2
            assert client.get("/docs").status_code == 200
        server.process.terminate()
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert server.process.wait(timeout=15) in (0, -15)
        records = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    # one line per request: the access line carries the prediction's outcome and rows
    predictions = [r for r in records if r.get("logger") == "berth.access" and r.get("outcome")]
    assert not [r for r in records if r.get("logger") == "berth.predictions"]
    first = next(r for r in predictions if r["request_id"] == "e2e-1")
    assert first["rows"] == 1
    assert first["model"] == "tabular"
    assert first["version"] == 1
    assert first["outcome"] == "ok"
    assert first["latency_ms"] > 0
    assert any(r["outcome"] == "invalid_input" for r in predictions)
    assert {r["model"] for r in records if r.get("message") == "model loaded"} == {
        "intent",
        "injection",
        "tabular",
        "regression",
    }
    assert any(r.get("message") == "Application shutdown complete." for r in records)


@pytest.mark.e2e
def test_serve_refuses_a_tampered_model_with_a_clear_error(examples_registry: Registry) -> None:
    artifact = examples_registry.path("intent", 1) / "model.joblib"
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    expected = r"intent@1: sha256 of model\.joblib .* changed after registration"
    with (
        pytest.raises(RuntimeError, match=expected),
        berth_server(examples_registry.root, "intent", timeout=20),
    ):
        pass
