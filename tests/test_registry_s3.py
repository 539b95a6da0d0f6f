"""The registry on S3, against a real S3-compatible server process on loopback (moto_server).

MinIO cannot be installed here; moto's standalone server speaks the S3 REST API over HTTP,
including the conditional writes (`If-None-Match: *`) the registry's atomicity relies on.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from berth.errors import ChecksumMismatch, ModelNotFound
from berth.registry import Registry
from berth.registry.objectstore import ObjectRegistry
from berth.types import ModelCard, Signature
from tests.conftest import ClientFactory
from tests.formats import berth, flat, register_ok
from tests.servers import berth_server

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1.0)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Credentials and endpoint in the usual AWS variables, and a fresh bucket."""
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import boto3

    bucket = f"models-{os.urandom(4).hex()}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return {**env, "BUCKET": bucket}


@pytest.fixture
def s3_registry(s3_env: dict[str, str], tmp_path: Path) -> ObjectRegistry:
    return ObjectRegistry(f"s3://{s3_env['BUCKET']}/berth", tmp_path / "cache")


@pytest.fixture
def iris_file(tmp_path: Path) -> Path:
    x, y = load_iris(return_X_y=True)
    path = tmp_path / "iris.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), path)
    return path


def _card() -> ModelCard:
    return ModelCard(
        framework="sklearn",
        format="joblib",
        artifact="iris.joblib",
        task="classification",
        signature=Signature(kind="tabular", n_features=4),
        classes=[0, 1, 2],
        has_probabilities=True,
    )


def test_register_promote_and_serve_from_s3(
    s3_registry: ObjectRegistry, iris_file: Path, tmp_path: Path, make_client: ClientFactory
) -> None:
    url = s3_registry.url
    register_ok(url, str(iris_file), "--name", "iris")  # type: ignore[arg-type]
    register_ok(url, str(iris_file), "--name", "iris", "--alias", "production")  # type: ignore[arg-type]
    assert s3_registry.models() == ["iris"]
    assert s3_registry.versions("iris") == [1, 2]
    assert s3_registry.aliases("iris") == {"production": 2}
    promoted = berth(url, "models", "promote", "iris", "1")
    assert "iris: production 2 → 1" in flat(promoted)
    rolled = berth(url, "models", "rollback", "iris")
    assert "iris: production 1 → 2" in flat(rolled)
    assert s3_registry.alias_history("iris", "production") == [2]
    assert s3_registry.card("iris", 2).files == s3_registry.card("iris", 1).files

    cache = tmp_path / "server-cache"
    with make_client(
        Registry(tmp_path / "unused"), registry_url=url, registry_cache=cache
    ) as client:
        response = client.post("/predict", json={"features": [5.1, 3.5, 1.4, 0.2]})
    assert response.status_code == 200, response.text
    assert response.json()["prediction"] == 0
    assert response.json()["version"] == 2
    cached = list(cache.glob("*/iris/2/iris.joblib"))
    assert len(cached) == 1

    deleted = berth(url, "models", "delete", "iris@1")
    assert deleted.exit_code == 0, deleted.output
    assert s3_registry.versions("iris") == [2]
    refused = berth(url, "models", "delete", "iris@2")
    assert "still pointed at by alias production" in flat(refused)


def test_concurrent_registers_get_distinct_versions(
    s3_registry: ObjectRegistry, iris_file: Path
) -> None:
    results: list[int] = []
    errors: list[BaseException] = []

    def register() -> None:
        try:
            results.append(s3_registry.register("iris", [iris_file], _card()).version)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=register) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == [1, 2, 3, 4, 5, 6]
    assert s3_registry.versions("iris") == [1, 2, 3, 4, 5, 6]


def test_concurrent_alias_changes_are_not_lost(
    s3_registry: ObjectRegistry, iris_file: Path
) -> None:
    for _ in range(2):
        s3_registry.register("iris", [iris_file], _card())
    aliases = [f"a{i}" for i in range(6)]
    threads = [
        threading.Thread(target=s3_registry.set_alias, args=("iris", alias, 1 + i % 2))
        for i, alias in enumerate(aliases)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert s3_registry.aliases("iris") == {a: 1 + i % 2 for i, a in enumerate(aliases)}


def test_half_written_version_is_invisible(s3_registry: ObjectRegistry, iris_file: Path) -> None:
    s3_registry.register("iris", [iris_file], _card())
    # a register that crashed after claiming 2 and uploading its file, before model.json
    s3_registry.fs.pipe_file(f"{s3_registry.base}/iris/2/.claim", b"x")
    s3_registry.fs.put_file(str(iris_file), f"{s3_registry.base}/iris/2/iris.joblib")
    assert s3_registry.versions("iris") == [1]
    assert s3_registry.card("iris").version == 1
    assert s3_registry.register("iris", [iris_file], _card()).version == 3
    assert s3_registry.versions("iris") == [1, 3]
    with pytest.raises(ModelNotFound):
        s3_registry.versions("nope")


def test_checksums_are_checked_after_download(s3_registry: ObjectRegistry, iris_file: Path) -> None:
    card = s3_registry.register("iris", [iris_file], _card())
    s3_registry.fs.pipe_file(f"{s3_registry.base}/iris/1/iris.joblib", b"tampered")
    local = s3_registry.path("iris", 1)
    assert (local / "iris.joblib").read_bytes() == b"tampered"
    with pytest.raises(ChecksumMismatch, match="the file was changed after registration"):
        s3_registry.verify(card)


def test_real_server_serves_from_s3(
    s3_registry: ObjectRegistry, s3_env: dict[str, str], iris_file: Path, tmp_path: Path
) -> None:
    s3_registry.register("iris", [iris_file], _card(), alias="production")
    env = {k: v for k, v in s3_env.items() if k != "BUCKET"}
    env["BERTH_REGISTRY_URL"] = s3_registry.url
    env["BERTH_REGISTRY_CACHE"] = str(tmp_path / "cache")
    with berth_server(tmp_path / "registry", env=env) as server:
        response = httpx.post(f"{server.url}/predict", json={"features": [6.7, 3.0, 5.2, 2.3]})
    assert response.status_code == 200, response.text
    assert response.json()["prediction"] == 2
