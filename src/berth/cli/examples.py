"""`berth examples ...`: train and register the example models."""

from __future__ import annotations

import click

from berth.cli.common import CliState, console, spinner

__all__ = ["examples"]

NAMES = ["intent", "injection", "tabular", "regression"]


@click.group()
def examples() -> None:
    """Example models trained on data Berth generates or ships (no download)."""


@examples.command()
@click.argument("names", nargs=-1, required=True, type=click.Choice([*NAMES, "all"]))
@click.option(
    "--if-missing", is_flag=True, help="Skip examples that already have a production alias."
)
@click.option(
    "--alias", default="production", show_default=True, help="Alias the new version gets."
)
@click.pass_obj
def train(state: CliState, names: tuple[str, ...], if_missing: bool, alias: str) -> None:
    """Train NAMES (intent, injection, tabular, regression or all) and register them (as production)."""
    from berth.examples.train import EXAMPLES, register_example

    settings = state.settings()
    registry = state.registry()
    for name in NAMES if "all" in names else dict.fromkeys(names):
        if if_missing and name in registry.models() and "production" in registry.aliases(name):
            console.print(
                f"[green]✓[/] {name} is already registered (production → "
                f"{registry.aliases(name)['production']})"
            )
            continue
        with spinner(f"Training the {name} example"):
            example = EXAMPLES[name]()
        with spinner(f"Registering {name}"):
            card = register_example(registry, name, example, settings, alias=alias)
        metrics = ", ".join(f"{k}={v}" for k, v in card.metrics.items())
        console.print(f"[green]✓[/] registered [bold]{card.ref}[/] as {alias} ({metrics})")
