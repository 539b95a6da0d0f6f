"""`berth`: the entry point and its top-level commands (serve, predict)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click
import orjson

from berth import __version__
from berth.cli.build import build
from berth.cli.common import BerthGroup, CliState, console, print_json
from berth.cli.drift import drift
from berth.cli.examples import examples
from berth.cli.keys import keys
from berth.cli.models import models
from berth.cli.predictions import predictions
from berth.cli.routes import routes
from berth.errors import MalformedRequest

__all__ = ["cli", "main"]


@click.group(cls=BerthGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--registry",
    default=None,
    help="Registry folder, or s3://bucket/prefix or gs://bucket/prefix "
    "(default: $BERTH_REGISTRY_URL, $BERTH_REGISTRY or ./registry).",
)
@click.version_option(__version__, prog_name="berth")
@click.pass_context
def cli(ctx: click.Context, registry: str | None) -> None:
    """Berth: register trained models and serve them as a fast, safe, observable API."""
    if registry is not None and "://" in registry:
        ctx.obj = CliState({"registry_url": registry})
    else:
        ctx.obj = CliState({"registry": Path(registry) if registry else None})


cli.add_command(models)
cli.add_command(examples)
cli.add_command(routes)
cli.add_command(predictions)
cli.add_command(drift)
cli.add_command(build)
cli.add_command(keys)


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8000).")
@click.option(
    "--grpc-port",
    type=int,
    default=None,
    help="gRPC port of the Open Inference Protocol (default 0: off; needs berth[grpc]).",
)
@click.option(
    "--default-model", default=None, help="Model answered by /predict when several are served."
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="Worker processes (default 1)."
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default=None)
@click.option("--log-format", type=click.Choice(["json", "text"]), default=None)
@click.option(
    "--ssl-certfile",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PEM certificate: serve HTTPS (with --ssl-keyfile).",
)
@click.option(
    "--ssl-keyfile",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PEM private key for HTTPS.",
)
@click.option(
    "--shutdown-grace",
    "shutdown_grace_s",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="After SIGTERM, keep accepting connections (not ready) this long (default 0).",
)
@click.pass_obj
def serve(state: CliState, /, names: tuple[str, ...], **flags: Any) -> None:
    """Serve NAMES (NAME, NAME@VERSION or NAME@ALIAS; default: every model with a production alias)."""
    from berth.server.runner import run

    settings = state.settings(models=list(names) or None, **flags)
    run(settings)


@cli.command()
@click.argument("ref")
@click.argument("payload")
@click.pass_obj
def predict(state: CliState, ref: str, payload: str) -> None:
    """Predict in-process with REF (NAME[@VERSION|@ALIAS]) on PAYLOAD, a JSON instance.

    PAYLOAD is the body /predict takes, e.g. '{"text": "Hello!"}', or {"instances": [...]}.
    """
    from berth.dataplane import DataPlane
    from berth.registry import Registry
    from berth.server.encoding import prediction_rows

    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"PAYLOAD is not valid JSON: {exc}") from None
    settings = state.settings(models=[ref], refresh_interval_s=0)
    dataplane = DataPlane(Registry.from_settings(settings), settings)
    many = isinstance(body, dict) and "instances" in body

    async def once() -> Any:
        try:
            await dataplane.start()
            return await dataplane.predict(None, None, body, many=many)
        finally:
            await dataplane.stop()

    prediction = asyncio.run(once())
    rows = prediction_rows(prediction)
    head = {"model": prediction.card.name, "version": prediction.card.version}
    print_json({**head, "predictions": rows} if many else {**head, **rows[0]})


@cli.group()
def config() -> None:
    """Inspect Berth's settings."""


@config.command("show")
@click.pass_obj
def config_show(state: CliState) -> None:
    """Print the settings in force (flags > environment > .env > defaults)."""
    print_json(state.settings().model_dump(mode="json"))


@config.command("reference")
def config_reference() -> None:
    """Print the configuration reference as Markdown (docs/configuration.md embeds it)."""
    from berth.settings import settings_reference

    click.echo(settings_reference(), nl=False)


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        console.print("interrupted")
        raise SystemExit(130) from None
