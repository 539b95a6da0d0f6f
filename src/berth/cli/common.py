"""What every command shares: settings from flags, a console, errors printed as one red line."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from berth.errors import BerthError
from berth.registry import Registry
from berth.settings import Settings

__all__ = ["BerthGroup", "CliState", "byte_progress", "console", "print_json", "spinner"]

console = Console(stderr=True, soft_wrap=True, highlight=False)
out = Console()


@dataclass
class CliState:
    """Flags given to the `berth` group; settings are built from them on demand."""

    overrides: dict[str, Any] = field(default_factory=dict)

    def settings(self, **more: Any) -> Settings:
        values = {k: v for k, v in {**self.overrides, **more}.items() if v is not None}
        return Settings(**values)

    def registry(self) -> Registry:
        return Registry.from_settings(self.settings())


class BerthGroup(click.Group):
    """A click group that turns BerthError into `error: ...` and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BerthError as exc:
            console.print(
                f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True
            )
            sys.exit(1)


@contextmanager
def spinner(text: str) -> Iterator[None]:
    """A spinner with elapsed time for a step that takes more than about a second."""
    if not console.is_terminal:
        yield
        console.print(f"✓ {text}", highlight=False, soft_wrap=True)
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        progress.add_task(text, total=None)
        yield
    console.print(f"[green]✓[/] {text}", highlight=False, soft_wrap=True)


@contextmanager
def byte_progress(text: str, total: int) -> Iterator[Any]:
    """A progress bar over `total` bytes; yields the callback to advance it."""
    if not console.is_terminal:
        yield lambda n: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(text, total=total)
        yield lambda n: progress.advance(task, n)


def print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))
