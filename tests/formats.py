"""Helpers for the model-format tests: register through the real CLI, predict over REST."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    """Serve `name` in-process and answer (predictions of /predict/batch, /model/info)."""
    with make_client(registry, models=[name], **settings) as client:
        response = client.post("/predict/batch", json={"instances": instances})
        assert response.status_code == 200, response.text
        info = client.get("/model/info")
        assert info.status_code == 200, info.text
        return response.json()["predictions"], info.json()
