"""Helpers for the model-format tests: register through the real CLI, predict over REST."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from click.testing import CliRunner, Result

from berth.cli.main import cli
from berth.registry import Registry
from tests.conftest import ClientFactory


def berth(registry: Registry | Path | str, *args: str) -> Result:
    """Run `berth --registry REGISTRY ARGS...` in-process; the result keeps output and exit code."""
    return CliRunner().invoke(cli, ["--registry", str(getattr(registry, "root", registry)), *args])


def flat(result: Result) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def register_ok(registry: Registry, *args: str) -> None:
    result = berth(registry, "models", "register", *args)
    assert result.exit_code == 0, result.output


def predict_rest(
    make_client: ClientFactory, registry: Registry, name: str, instances: list[Any], **settings: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Serve `name` in-process and answer (predictions of /predict/batch, /model/info).

    The same rows also go through Open Inference Protocol V2 (`/v2/models/NAME/infer`), which must
    agree with the simple API.
    """
    with make_client(registry, models=[name], **settings) as client:
        response = client.post("/predict/batch", json={"instances": instances})
        assert response.status_code == 200, response.text
        info = client.get("/model/info")
        assert info.status_code == 200, info.text
        predictions = response.json()["predictions"]
        v2 = client.post(
            f"/v2/models/{name}/infer", json={"inputs": [v2_input(info.json(), instances)]}
        )
        assert v2.status_code == 200, v2.text
        first = v2.json()["outputs"][0]
        simple = [p["prediction"] for p in predictions]
        if first["name"] == "value":
            assert np.allclose(first["data"], simple)
        else:
            assert first["data"] == simple
        return predictions, info.json()


def v2_input(info: dict[str, Any], instances: list[Any]) -> dict[str, Any]:
    """The instances as one V2 input tensor, as the model's V2 metadata describes it."""
    rows = [
        next(iter(i.values()))
        if isinstance(i, dict) and len(i) == 1 and next(iter(i)) in ("text", "features")
        else i
        for i in instances
    ]
    if info["signature"]["kind"] == "text":
        return {"name": "text", "datatype": "BYTES", "shape": [len(rows)], "data": rows}
    names = info["signature"]["feature_names"]
    matrix = [[r[n] for n in names] if isinstance(r, dict) else r for r in rows]
    return {
        "name": "features",
        "datatype": "FP64",
        "shape": [len(matrix), len(matrix[0])],
        "data": np.asarray(matrix, dtype=np.float64).tolist(),
    }
