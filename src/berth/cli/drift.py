"""`berth drift report NAME`: compare logged traffic with the reference, as an HTML file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from berth.cli.common import CliState, console, spinner

if TYPE_CHECKING:
    from berth.runtimes.base import Vocabulary
    from berth.types import ModelCard

__all__ = ["drift"]


def _vocabulary(state: CliState, card: ModelCard) -> Vocabulary | None:
    """A text model's vocabulary, for the out-of-vocabulary rate (loads the verified model; only
    when its reference has that rate)."""
    from berth.dataplane import load_version
    from berth.monitoring.drift import OOV_COLUMN, feature_columns

    if OOV_COLUMN not in feature_columns(card.reference or {}):
        return None
    with spinner(f"Loading {card.ref} for its vocabulary"):
        entry = load_version(state.registry(), state.settings(), card.name, card.version)
    return entry.model.vocabulary()


@click.group()
def drift() -> None:
    """Data drift of served models, from the prediction log."""


@drift.command()
@click.argument("ref")
@click.option("--since", default=None, help="Only records since then: 15m, 2h, 7d or an ISO time.")
@click.option("--limit", default=100_000, show_default=True, help="Most recent records to use.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="HTML file to write (default: drift-NAME-VERSION.html).",
)
@click.option("--store", "store_url", default=None, help="Store URL (default: the settings').")
@click.pass_obj
def report(
    state: CliState,
    ref: str,
    since: str | None,
    limit: int,
    output: Path | None,
    store_url: str | None,
) -> None:
    """Write a self-contained HTML drift report for REF (NAME[@VERSION|@ALIAS], default production)."""
    from berth.monitoring import store
    from berth.monitoring.monitor import state_dir
    from berth.monitoring.report import drift_from_records, render_report
    from berth.registry import parse_ref

    settings = state.settings(prediction_store=store_url)
    registry = state.registry()
    name, version = parse_ref(ref)
    if version is None and settings.serve_alias in registry.aliases(name):
        version = settings.serve_alias
    card = registry.card(name, version)
    engine = store.create_store_engine(
        store.store_url(settings.prediction_store, state_dir(settings))
    )
    start = store.parse_since(since)
    records = [
        r
        for r in store.query(engine, model=name, since=start, limit=limit)
        if r["version"] == card.version
    ]
    engine.dispose()
    result = drift_from_records(card, records, _vocabulary(state, card))
    output = output or Path(f"drift-{card.name}-{card.version}.html")
    output.write_text(render_report(card, result, start), encoding="utf-8")
    max_psi = result.get("max_psi")
    shown = "-" if max_psi is None else f"{max_psi:.3f}"
    console.print(
        f"[green]✓[/] {card.ref}: {result['window_rows']} logged rows, largest PSI {shown} "
        f"→ {output}"
    )
