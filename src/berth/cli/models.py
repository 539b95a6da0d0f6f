"""`berth models ...`: register, list, show, promote, roll back and delete versions."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.table import Table

from berth.cli.common import CliState, byte_progress, console, out, print_json, spinner
from berth.errors import InvalidInput
from berth.registry import parse_ref
from berth.runtimes import Hints, runtime_for_path
from berth.types import Label, ModelCard, Task

__all__ = ["models"]


@click.group()
def models() -> None:
    """Manage registered models and their versions."""


def _read_reference(path: Path, card: ModelCard) -> tuple[Any, dict[str, Any]]:
    """Rows of a reference CSV (with a header) in the model's input layout, and an input example."""
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        records = list(reader)
    if not header or not records:
        raise InvalidInput(f"{path}: expected a header line and at least one row")
    signature = card.signature
    if signature.kind == "text":
        column = header.index("text") if "text" in header else 0
        texts = [r[column] for r in records if r[column].strip()]
        return texts, {"text": texts[0]}
    names = signature.feature_names
    if names:
        missing = [n for n in names if n not in header]
        if missing:
            raise InvalidInput(f"{path}: columns missing for features {', '.join(missing[:5])}")
        columns = [header.index(n) for n in names]
    elif len(header) == signature.n_features:
        columns = list(range(len(header)))
    else:
        raise InvalidInput(
            f"{path}: has {len(header)} columns but the model takes {signature.n_features} unnamed "
            "features; keep only the feature columns, in order"
        )
    try:
        rows = np.array([[float(r[c]) for c in columns] for r in records], dtype=np.float64)
    except ValueError as exc:
        raise InvalidInput(f"{path}: non-numeric value in a feature column: {exc}") from None
    example = [round(float(v), 6) for v in rows[0]]
    return rows, {"features": dict(zip(names, example, strict=True)) if names else example}


def _parse_classes(text: str | None) -> list[Label] | None:
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if all(part.lstrip("-").isdigit() for part in parts):
        return [int(part) for part in parts]
    return list(parts)


def _model_files(path: Path) -> list[Path]:
    """The file itself, or every file of a model folder (caches and hidden files skipped)."""
    if path.is_file():
        return [path]
    files = sorted(
        child
        for child in path.rglob("*")
        if child.is_file()
        and not any(
            part.startswith(".") or part == "__pycache__" for part in child.relative_to(path).parts
        )
    )
    if not files:
        raise InvalidInput(f"{path} is an empty folder")
    return files


@models.command()
@click.argument("source")
@click.option("--name", required=True, help="Model name (letters, digits, '.', '_', '-').")
@click.option(
    "--alias", default=None, help="Point this alias (e.g. production) at the new version."
)
@click.option(
    "--reference",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CSV of reference inputs (with a header): statistics for drift monitoring.",
)
@click.option(
    "--feature-names", default=None, help="Comma-separated feature names, if the model has none."
)
@click.option("--description", default=None, help="Free text stored with the version.")
@click.option("--example", "example_json", default=None, help="A JSON input example for the docs.")
@click.option(
    "--task",
    type=click.Choice(["classification", "regression"]),
    default=None,
    help="For files that do not record it (PyTorch, some ONNX graphs).",
)
@click.option(
    "--classes",
    default=None,
    help="Comma-separated class labels in the order of the model's outputs (default 0..k-1).",
)
@click.option("--n-features", type=int, default=None, help="Input width, if the file has none.")
@click.option(
    "--class",
    "model_class",
    default=None,
    help="module:Class: the torch.nn.Module of a state_dict file, or the berth Model subclass "
    "of a custom model folder or .py file.",
)
@click.option(
    "--init-args",
    default=None,
    help="JSON object of keyword arguments for the --class constructor.",
)
@click.option("--sha256", default=None, help="Required for a URL: the file's expected sha256.")
@click.pass_obj
def register(
    state: CliState,
    source: str,
    name: str,
    alias: str | None,
    reference: Path | None,
    feature_names: str | None,
    description: str | None,
    example_json: str | None,
    task: Task | None,
    classes: str | None,
    n_features: int | None,
    model_class: str | None,
    init_args: str | None,
    sha256: str | None,
) -> None:
    """Register SOURCE as a new version of NAME.

    SOURCE is a model file (joblib, pickle, skops, .onnx, XGBoost .json/.ubj, LightGBM .txt,
    PyTorch .pt2/.pt/.pth), an MLflow model folder, a custom model (a .py file or a folder, with
    --class), or an http(s) URL of a file pinned with --sha256.
    """
    import tempfile

    import orjson

    from berth.sources.http import download, is_url

    init_kwargs = orjson.loads(init_args) if init_args else {}
    if not isinstance(init_kwargs, dict):
        raise InvalidInput("--init-args must be a JSON object")
    hints = Hints(
        task=task,
        classes=_parse_classes(classes),
        n_features=n_features,
        model_class=model_class,
        init_kwargs=init_kwargs,
    )
    tags: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if is_url(source):
            with spinner(f"Downloading {source}"):
                path = download(source, sha256, Path(tmp))
            tags = {"source": source, "source_sha256": (sha256 or "").lower()}
        else:
            path = Path(source)
            if not path.exists():
                raise InvalidInput(f"{source}: no such file or folder")
        _register_path(
            state,
            path,
            name,
            alias,
            reference,
            feature_names,
            description,
            example_json,
            hints,
            tags,
        )


def _register_path(
    state: CliState,
    path: Path,
    name: str,
    alias: str | None,
    reference: Path | None,
    feature_names: str | None,
    description: str | None,
    example_json: str | None,
    hints: Hints,
    tags: dict[str, str],
) -> None:
    import orjson

    from berth.monitoring.reference import reference_statistics

    settings = state.settings()
    registry = state.registry()
    runtime = runtime_for_path(path, hints)
    files = _model_files(path)
    names = [n.strip() for n in feature_names.split(",")] if feature_names else None
    with spinner(f"Inspecting {path.name}"):
        card = runtime.inspect(path, settings, feature_names=names, hints=hints)
    updates: dict[str, Any] = {"tags": {**card.tags, **tags}}
    if description:
        updates["description"] = description
    if reference is not None:
        with spinner(f"Computing reference statistics from {reference.name}"):
            rows, updates["input_example"] = _read_reference(reference, card)
            model = runtime(card, path if path.is_dir() else path.parent, settings)
            model.load()
            updates["reference"] = reference_statistics(
                rows, model.predict(rows), card.signature.feature_names, model.vocabulary()
            )
    if example_json:
        updates["input_example"] = orjson.loads(example_json)
    card = card.model_copy(update=updates)
    total = sum(f.stat().st_size for f in files)
    with byte_progress(f"Hashing and copying {path.name}", total) as advance:
        stored = registry.register(
            name, files, card, alias=alias, progress=advance, base=path if path.is_dir() else None
        )
    console.print(
        f"[green]✓[/] registered [bold]{stored.ref}[/] ({stored.task}, {stored.signature.describe()})"
        + (f", alias {alias}" if alias else "")
    )


@models.command("list")
@click.pass_obj
def list_models(state: CliState) -> None:
    """List registered models with their versions and aliases."""
    registry = state.registry()
    table = Table("name", "versions", "aliases", "latest task", "created")
    for name in registry.models():
        versions = registry.versions(name)
        if not versions:
            continue
        card = registry.card(name, versions[-1])
        aliases = ", ".join(f"{a}→{v}" for a, v in sorted(registry.aliases(name).items()))
        created = card.created_at.strftime("%Y-%m-%d %H:%M") if card.created_at else ""
        table.add_row(name, ", ".join(map(str, versions)), aliases, card.task, created)
    if not table.rows:
        console.print(f"no models registered in {registry.location}")
        return
    out.print(table)


@models.command()
@click.argument("ref")
@click.pass_obj
def show(state: CliState, ref: str) -> None:
    """Show the metadata of NAME[@VERSION|@ALIAS] (default: latest version)."""
    registry = state.registry()
    name, version = parse_ref(ref)
    card = registry.card(name, version)
    data = card.model_dump(mode="json", exclude={"reference"})
    data["aliases"] = sorted(a for a, v in registry.aliases(name).items() if v == card.version)
    data["reference_rows"] = (card.reference or {}).get("rows", 0)
    print_json(data)


@models.command()
@click.argument("name")
@click.argument("version", type=int)
@click.option("--alias", default="production", show_default=True)
@click.option("--no-check", is_flag=True, help="Skip loading the version before moving the alias.")
@click.pass_obj
def promote(state: CliState, name: str, version: int, alias: str, no_check: bool) -> None:
    """Point ALIAS of NAME at VERSION (after checking that it loads and answers).

    Running servers load and warm up the new version, switch to it, then unload the old one.
    """
    if not no_check:
        from berth.cli.routes import check_loads

        check_loads(state, name, [str(version)])
    previous = state.registry().set_alias(name, alias, version)
    console.print(
        f"[green]✓[/] {name}: {alias} {previous if previous is not None else '(none)'} → {version}"
    )


@models.command()
@click.argument("name")
@click.option("--alias", default="production", show_default=True)
@click.pass_obj
def rollback(state: CliState, name: str, alias: str) -> None:
    """Point ALIAS of NAME back at the version it pointed at before."""
    registry = state.registry()
    current = registry.aliases(name).get(alias)
    version = registry.rollback(name, alias)
    console.print(f"[green]✓[/] {name}: {alias} {current} → {version}")


@models.command()
@click.argument("ref")
@click.pass_obj
def delete(state: CliState, ref: str) -> None:
    """Delete NAME@VERSION (refused while an alias points at it)."""
    name, version = parse_ref(ref)
    if version is None or not version.isdigit():
        raise InvalidInput("give the version to delete as NAME@VERSION, e.g. intent@2")
    state.registry().delete(name, int(version))
    console.print(f"[green]✓[/] deleted {name}@{version}")


def _add_format_commands() -> None:
    from berth.cli.formats import convert, import_model

    models.add_command(convert)
    models.add_command(import_model)


_add_format_commands()
