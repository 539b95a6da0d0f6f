"""`berth keys ...`: create, list and revoke API keys (the server reloads the file by itself)."""

from __future__ import annotations

import click
from rich.table import Table

from berth.cli.common import CliState, console, out, print_json
from berth.security.keys import SCOPES, KeyStore, default_keys_path

__all__ = ["keys"]


def _store(state: CliState) -> KeyStore:
    settings = state.settings()
    return KeyStore(settings.api_keys_file or default_keys_path(settings.registry))


@click.group()
def keys() -> None:
    """Manage API keys. While no key exists, inference is open and admin routes answer only on
    loopback."""


@keys.command("create")
@click.option("--scope", type=click.Choice(SCOPES), required=True, help="What the key may call.")
@click.option("--model", default=None, help="Limit a predict key to this model.")
@click.option("--name", default="", help="Who or what the key is for (shown by `keys list`).")
@click.pass_obj
def create(state: CliState, scope: str, model: str | None, name: str) -> None:
    """Create a key and print it once: only its salted hash is stored."""
    store = _store(state)
    key, token = store.create(name, scope, model)
    click.echo(token)
    console.print(
        f"[green]✓[/] key {key.id} ({key.describe()}) stored in {store.path}; "
        "this is the only time it is shown",
        highlight=False,
    )


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def list_keys(state: CliState, as_json: bool) -> None:
    """List keys (ids, names, scopes; never secrets)."""
    rows = [
        {
            "id": k.id,
            "name": k.name,
            "scope": k.scope,
            "model": k.model,
            "created_at": k.created_at,
            "revoked_at": k.revoked_at,
        }
        for k in _store(state).list_keys()
    ]
    if as_json:
        print_json(rows)
        return
    table = Table("id", "name", "scope", "model", "created", "revoked")
    for row in rows:
        table.add_row(
            *(str(row[c] or "") for c in ("id", "name", "scope", "model")),
            str(row["created_at"]),
            str(row["revoked_at"] or ""),
        )
    out.print(table)


@keys.command("revoke")
@click.argument("key_id")
@click.pass_obj
def revoke(state: CliState, key_id: str) -> None:
    """Revoke KEY_ID; running servers refuse it within about a second."""
    key = _store(state).revoke(key_id)
    console.print(f"[green]✓[/] key {key.id} revoked at {key.revoked_at}", highlight=False)
