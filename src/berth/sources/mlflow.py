"""Import a model from an MLflow tracking server or model registry as a new Berth version."""

from __future__ import annotations

import tempfile
from pathlib import Path

from berth.errors import InvalidInput, MissingExtra, NotFound
from berth.registry import Registry
from berth.runtimes import Hints, runtime_for
from berth.settings import Settings
from berth.types import ModelCard

__all__ = ["import_mlflow_model", "name_from_uri"]


def name_from_uri(uri: str) -> str | None:
    """`models:/NAME/3` and `models:/NAME@alias` name a model; `runs:/...` does not."""
    if not uri.startswith("models:/"):
        return None
    rest = uri.removeprefix("models:/")
    return rest.split("@", 1)[0].split("/", 1)[0] or None


def import_mlflow_model(
    registry: Registry,
    uri: str,
    settings: Settings,
    *,
    name: str | None = None,
    alias: str | None = None,
    tracking_uri: str | None = None,
    hints: Hints | None = None,
) -> ModelCard:
    """Download `uri` (models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN/PATH) and register it."""
    if not uri.startswith(("models:/", "runs:/")):
        raise InvalidInput(
            f"{uri!r}: expected models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH"
        )
    name = name or name_from_uri(uri)
    if name is None:
        raise InvalidInput(f"{uri} does not name the model: give --name")
    runtime = runtime_for("mlflow")
    try:
        import mlflow.artifacts
        import mlflow.exceptions
    except ImportError as exc:  # pragma: no cover (runtime_for checked it)
        raise MissingExtra(
            "importing from MLflow needs mlflow: pip install 'berth[mlflow]'"
        ) from exc
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=uri, dst_path=tmp, tracking_uri=tracking_uri
                )
            )
        except mlflow.exceptions.MlflowException as exc:
            raise NotFound(f"cannot download {uri} from MLflow: {exc.message}") from None
        card = runtime.inspect(local, settings, hints=hints)
        card = card.model_copy(update={"tags": {**card.tags, "source": uri}})
        files = sorted(p for p in local.rglob("*") if p.is_file())
        return registry.register(name, files, card, alias=alias, base=local)
