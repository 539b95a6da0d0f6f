"""`berth predictions ...`: read the prediction log (tail, export)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from berth.cli.common import CliState, console

__all__ = ["predictions"]

SINCE_HELP = "Only records since then: 15m, 2h, 7d or an ISO time."


def _engine(state: CliState, store_url: str | None) -> Any:
    from berth.monitoring import store
    from berth.monitoring.monitor import state_dir

    settings = state.settings(prediction_store=store_url)
    return store.create_store_engine(
        store.store_url(settings.prediction_store, state_dir(settings))
    )


@click.group()
def predictions() -> None:
    """Read the prediction log (BERTH_PREDICTION_STORE, default SQLite in the state folder)."""


@predictions.command()
@click.argument("name")
@click.option("-n", "--lines", default=20, show_default=True, help="Records to show.")
@click.option("--since", default=None, help=SINCE_HELP)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new records as they arrive.")
@click.option("--store", "store_url", default=None, help="Store URL (default: the settings').")
@click.pass_obj
def tail(
    state: CliState, name: str, lines: int, since: str | None, follow: bool, store_url: str | None
) -> None:
    """Print the latest records of model NAME as JSON lines, oldest first."""
    from berth.monitoring import store
    from berth.monitoring.export import record_json

    engine = _engine(state, store_url)
    start = store.parse_since(since)
    rows = list(reversed(store.query(engine, model=name, since=start, limit=lines)))
    seen = {row["id"] for row in rows}
    for row in rows:
        click.echo(record_json(row))
    while follow:
        time.sleep(1.0)
        after = rows[-1]["ts"] if rows else start
        fresh = store.query(engine, model=name, since=after, limit=None, newest_first=False)
        for row in fresh:
            if row["id"] not in seen:
                seen.add(row["id"])
                click.echo(record_json(row))
        rows = fresh or rows


@predictions.command()
@click.argument("name")
@click.option("--since", default=None, help=SINCE_HELP)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv", "parquet"]),
    default="jsonl",
    show_default=True,
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to write (default: stdout; required for parquet).",
)
@click.option("--store", "store_url", default=None, help="Store URL (default: the settings').")
@click.pass_obj
def export(
    state: CliState,
    name: str,
    since: str | None,
    fmt: str,
    output: Path | None,
    store_url: str | None,
) -> None:
    """Export every record of model NAME (oldest first) as JSON lines, CSV or Parquet."""
    from berth.errors import InvalidInput
    from berth.monitoring import store
    from berth.monitoring.export import write_records

    if fmt == "parquet" and output is None:
        raise InvalidInput("--format parquet needs --output FILE")
    engine = _engine(state, store_url)
    rows = store.query(
        engine, model=name, since=store.parse_since(since), limit=None, newest_first=False
    )
    n = write_records(rows, fmt, output if output is not None else sys.stdout.buffer)  # type: ignore[arg-type]
    if output is not None:
        console.print(f"[green]✓[/] wrote {n} records of {name} to {output}")
