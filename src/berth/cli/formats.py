"""`berth models convert` (scikit-learn to ONNX) and `berth models import` (from MLflow)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from berth.cli.common import CliState, console, out, spinner
from berth.errors import InvalidInput
from berth.registry import parse_ref
from berth.runtimes import Hints
from berth.types import Task

__all__ = ["convert", "import_model"]


@click.command()
@click.argument("ref")
@click.option("--to", "target", type=click.Choice(["onnx"]), required=True, help="Target format.")
@click.option(
    "--samples",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CSV of inputs to compare on (default: drawn from the version's reference statistics).",
)
@click.option(
    "--tolerance",
    type=float,
    default=1e-4,
    show_default=True,
    help="Largest difference allowed in a probability (or regression value).",
)
@click.option("--alias", default=None, help="Point this alias at the converted version.")
@click.option(
    "--force", is_flag=True, help="Register the conversion even if parity fails (recorded)."
)
@click.pass_obj
def convert(
    state: CliState,
    ref: str,
    target: str,
    samples: Path | None,
    tolerance: float,
    alias: str | None,
    force: bool,
) -> None:
    """Convert the scikit-learn model REF (NAME[@VERSION|@ALIAS]) to ONNX as a new version.

    Both models predict the same sample rows: labels must be equal and probabilities within
    --tolerance, else nothing is registered. The speed of both is printed and recorded.
    """
    from berth.cli.models import _read_reference
    from berth.conversion import convert_to_onnx

    settings = state.settings()
    registry = state.registry()
    name, version = parse_ref(ref)
    rows = None
    if samples is not None:
        rows, _ = _read_reference(samples, registry.card(name, version))
    with spinner(f"Converting {ref} to {target}, checking parity and timing both"):
        result = convert_to_onnx(
            registry,
            name,
            version,
            settings,
            samples=rows,
            tolerance=tolerance,
            alias=alias,
            register_on_mismatch=force,
        )
    parity = result.parity
    table = Table("", result.source.ref + " (sklearn)", "onnx", title="speed (median)")
    table.add_row(
        "1 row",
        f"{result.source_speed.single_row_ms:.3f} ms",
        f"{result.converted_speed.single_row_ms:.3f} ms",
    )
    table.add_row(
        f"{result.source_speed.batch_rows} rows",
        f"{result.source_speed.batch_ms:.2f} ms ({result.source_speed.rows_per_s:,.0f} rows/s)",
        f"{result.converted_speed.batch_ms:.2f} ms "
        f"({result.converted_speed.rows_per_s:,.0f} rows/s)",
    )
    out.print(table)
    verdict = "[green]parity ok[/]" if parity.passed else "[bold red]parity FAILED[/]"
    console.print(
        f"{verdict}: labels equal on {parity.labels_equal}/{parity.rows} rows, largest "
        f"difference {parity.max_abs_diff:.3g} (tolerance {parity.tolerance:g})"
    )
    if result.card is None:
        why = ""
        if result.source.signature.kind == "text":
            why = " (skl2onnx tokenizes text with its own regular expressions, which can differ)"
        raise InvalidInput(
            f"the ONNX conversion of {result.source.ref} does not match the original{why}, so it "
            "was not registered (--tolerance to accept larger differences, --force to register "
            "it anyway)"
        )
    console.print(
        f"[green]✓[/] registered [bold]{result.card.ref}[/] (onnx, converted from "
        f"{result.source.ref})" + (f", alias {alias}" if alias else "")
    )


@click.command("import")
@click.argument("uri")
@click.option("--name", default=None, help="Model name in Berth (default: the MLflow name).")
@click.option("--alias", default=None, help="Point this alias at the imported version.")
@click.option(
    "--tracking-uri", default=None, help="MLflow tracking server (default: $MLFLOW_TRACKING_URI)."
)
@click.option(
    "--task",
    type=click.Choice(["classification", "regression"]),
    default=None,
    help="For a pyfunc model whose output schema does not tell.",
)
@click.pass_obj
def import_model(
    state: CliState,
    uri: str,
    name: str | None,
    alias: str | None,
    tracking_uri: str | None,
    task: Task | None,
) -> None:
    """Import an MLflow model: models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH.

    The model's files are downloaded from the tracking server and registered as a new version;
    its signature and input example are kept.
    """
    from berth.sources.mlflow import import_mlflow_model

    settings = state.settings()
    registry = state.registry()
    with spinner(f"Importing {uri}"):
        stored = import_mlflow_model(
            registry,
            uri,
            settings,
            name=name,
            alias=alias,
            tracking_uri=tracking_uri,
            hints=Hints(task=task),
        )
    console.print(
        f"[green]✓[/] imported [bold]{stored.ref}[/] from {uri} ({stored.task}, "
        f"{stored.signature.describe()})" + (f", alias {alias}" if alias else "")
    )
