"""The registry on GCS through gcsfs, against gcp-storage-emulator on loopback.

The emulator serves the JSON API but does not enforce `ifGenerationMatch`, so only the plain path
(register, list, alias, download, serve) is checked here; the create-only races are covered on
S3 (test_registry_s3.py), which shares the code.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from berth.registry import Registry
from berth.registry.objectstore import ObjectRegistry
from tests.conftest import ClientFactory
from tests.formats import register_ok

pytest.importorskip("gcsfs")
pytest.importorskip("gcp_storage_emulator")


@pytest.fixture
def gcs_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (tmp_path / "gcs.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gcp_storage_emulator",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--in-memory",
            "--default-bucket",
            "models",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{endpoint}/storage/v1/b", timeout=1.0)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("gcp-storage-emulator did not start") from None
                time.sleep(0.1)
        yield "gs://models/berth"
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def test_register_and_serve_from_gcs(
    gcs_url: str, tmp_path: Path, make_client: ClientFactory
) -> None:
    x, y = load_iris(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), tmp_path / "iris.joblib")
    register_ok(gcs_url, str(tmp_path / "iris.joblib"), "--name", "iris")  # type: ignore[arg-type]
    register_ok(gcs_url, str(tmp_path / "iris.joblib"), "--name", "iris", "--alias", "production")  # type: ignore[arg-type]
    registry = ObjectRegistry(gcs_url, tmp_path / "cache")
    assert registry.versions("iris") == [1, 2]
    assert registry.aliases("iris") == {"production": 2}
    with make_client(
        Registry(tmp_path / "unused"), registry_url=gcs_url, registry_cache=tmp_path / "cache"
    ) as client:
        response = client.post("/predict", json={"features": [6.7, 3.0, 5.2, 2.3]})
    assert response.status_code == 200, response.text
    assert (response.json()["prediction"], response.json()["version"]) == (2, 2)
