"""MLflow: import from a real `mlflow server` on loopback (SQLite backend) and serve the models.

Skipped where mlflow is absent: it is heavy, so it is not in the `test` extra; `make test-formats`
installs it. Starting the server takes most of this module's time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from berth.registry import Registry
from tests.conftest import ClientFactory
from tests.formats import berth, flat

mlflow = pytest.importorskip("mlflow", reason="mlflow is not installed (make test-formats)")

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    log = (root / "server.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the server starts worker processes
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                if httpx.get(f"{uri}/health", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server did not start:\n{(root / 'server.log').read_text()}"
                )
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def logged(tracking_uri: str) -> dict[str, Any]:
    """An sklearn classifier in the model registry (alias champion) and a pyfunc model in a run."""
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(tracking_uri)
    data = load_iris(as_frame=True)
    x = data.data.set_axis(["sepal_length", "sepal_width", "petal_length", "petal_width"], axis=1)
    y = np.asarray(data.target_names)[data.target]
    model = LogisticRegression(max_iter=500).fit(x, y)
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(x, model.predict(x)),
            input_example=x.iloc[:2],
            registered_model_name="iris",
        )
    mlflow.MlflowClient().set_registered_model_alias("iris", "champion", 1)

    class Doubler(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            return model_input.sum(axis=1).to_numpy() * 2.0

    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    with mlflow.start_run() as run:
        mlflow.pyfunc.log_model(
            name="doubler",
            python_model=Doubler(),
            signature=infer_signature(frame, np.array([8.0, 12.0])),
            input_example=frame,
        )
    return {"model": model, "x": x, "run_id": run.info.run_id}


def test_import_registered_versions_and_aliases(
    tracking_uri: str, logged: dict[str, Any], registry: Registry, make_client: ClientFactory
) -> None:
    first = berth(registry, "models", "import", "models:/iris/1", "--tracking-uri", tracking_uri)
    assert first.exit_code == 0, first.output
    assert "imported iris@1 from models:/iris/1 (classification, 4 numeric features named" in flat(
        first
    )
    second = berth(
        registry,
        "models",
        "import",
        "models:/iris@champion",
        "--tracking-uri",
        tracking_uri,
        "--alias",
        "production",
    )
    assert second.exit_code == 0, second.output
    card = registry.card("iris", "production")
    assert (card.version, card.framework, card.format) == (2, "mlflow", "sklearn")
    assert card.signature.feature_names == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    assert card.classes == ["setosa", "versicolor", "virginica"]
    assert card.input_example == {
        "features": {
            "sepal_length": 5.1,
            "sepal_width": 3.5,
            "petal_length": 1.4,
            "petal_width": 0.2,
        }
    }
    assert card.tags["source"] == "models:/iris@champion"
    assert "MLmodel" in card.files and "mlflow" in card.libraries

    x = logged["x"]
    rows = x.iloc[[0, 60, 120]]
    with make_client(registry, models=["iris"]) as client:
        response = client.post(
            "/predict/batch", json={"instances": [{"features": r} for r in rows.to_dict("records")]}
        )
        info = client.get("/model/info").json()
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["prediction"] for p in predictions] == logged["model"].predict(rows).tolist()
    expected = logged["model"].predict_proba(rows)
    assert np.allclose([list(p["probabilities"].values()) for p in predictions], expected)
    assert info["framework"] == "mlflow"


def test_import_pyfunc_from_a_run(
    tracking_uri: str, logged: dict[str, Any], registry: Registry, make_client: ClientFactory
) -> None:
    uri = f"runs:/{logged['run_id']}/doubler"
    no_name = berth(registry, "models", "import", uri, "--tracking-uri", tracking_uri)
    assert "does not name the model: give --name" in flat(no_name)
    result = berth(
        registry, "models", "import", uri, "--tracking-uri", tracking_uri, "--name", "doubler"
    )
    assert result.exit_code == 0, result.output
    card = registry.card("doubler")
    assert (card.format, card.task, card.signature.feature_names) == (
        "python_function",
        "regression",
        ["a", "b"],
    )
    with make_client(registry, models=["doubler"]) as client:
        response = client.post("/predict/batch", json={"instances": [{"a": 1, "b": 2}, [3.5, 4]]})
    assert response.status_code == 200, response.text
    assert [p["prediction"] for p in response.json()["predictions"]] == [6.0, 15.0]


def test_unknown_model_is_a_clear_error(
    tracking_uri: str, logged: dict[str, Any], registry: Registry
) -> None:
    result = berth(registry, "models", "import", "models:/nope/1", "--tracking-uri", tracking_uri)
    assert result.exit_code == 1
    assert "cannot download models:/nope/1 from MLflow" in flat(result)
    bad = berth(registry, "models", "import", "s3://bucket/model", "--tracking-uri", tracking_uri)
    assert "expected models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH" in flat(bad)
