"""API key store and `berth keys ...`: hashes only, constant-time checks, reload on change."""

from __future__ import annotations

import stat
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from berth.cli.main import cli
from berth.errors import Conflict, InvalidInput, NotFound
from berth.security.keys import KeyStore, default_keys_path


def test_created_key_authenticates_and_only_a_salted_hash_is_stored(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json", check_interval_s=0)
    key, token = store.create("ci", "predict", model="intent")
    assert token.startswith(f"berth_{key.id}_")
    raw = (tmp_path / "keys.json").read_text()
    assert token.split("_", 2)[2] not in raw
    [record] = orjson.loads(raw)["keys"]
    assert record["scope"] == "predict"
    assert record["model"] == "intent"
    assert len(bytes.fromhex(record["salt"])) == 16
    assert len(bytes.fromhex(record["hash"])) == 32
    assert stat.S_IMODE((tmp_path / "keys.json").stat().st_mode) == 0o600
    assert store.authenticate(token) == key
    assert store.authenticate(token) == key  # second time from the cache


def test_same_secret_twice_gives_different_hashes(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json", check_interval_s=0)
    a, _ = store.create("a", "admin")
    b, _ = store.create("b", "admin")
    assert a.salt != b.salt
    assert a.hash != b.hash


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # wrong secret
        lambda t: "berth_000000000000_" + t.split("_", 2)[2],  # unknown id
        lambda t: t.replace("berth_", "other_", 1),  # wrong prefix
        lambda t: "",
        lambda t: "berth_only",
    ],
)
def test_wrong_tokens_are_refused(tmp_path: Path, mangle: object) -> None:
    store = KeyStore(tmp_path / "keys.json", check_interval_s=0)
    _, token = store.create("x", "predict")
    assert callable(mangle)
    assert store.authenticate(mangle(token)) is None
    assert store.authenticate(mangle(token)) is None  # and again, from the refusal cache


def test_revoke_is_seen_by_another_store_on_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    writer = KeyStore(path, check_interval_s=0)
    server = KeyStore(path, check_interval_s=0)
    assert not server.has_active_keys()
    key, token = writer.create("x", "predict")
    assert server.authenticate(token) == key
    writer.revoke(key.id)
    assert server.authenticate(token) is None
    assert not server.has_active_keys()
    with pytest.raises(Conflict):
        writer.revoke(key.id)
    with pytest.raises(NotFound):
        writer.revoke("nope")


def test_bad_scope_and_admin_model_are_refused(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    with pytest.raises(InvalidInput, match="unknown scope"):
        store.create("x", "root")
    with pytest.raises(InvalidInput, match="admin keys cover every model"):
        store.create("x", "admin", model="intent")


def test_cli_create_list_revoke(tmp_path: Path) -> None:
    runner = CliRunner()
    registry = tmp_path / "registry"
    base = ["--registry", str(registry), "keys"]
    created = runner.invoke(cli, [*base, "create", "--scope", "predict", "--model", "intent"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[0]
    store = KeyStore(default_keys_path(registry), check_interval_s=0)
    key = store.authenticate(token)
    assert key is not None
    assert key.model == "intent"

    listed = runner.invoke(cli, [*base, "list", "--json"])
    assert listed.exit_code == 0
    rows = orjson.loads(listed.stdout)
    assert [(r["id"], r["scope"], r["revoked_at"]) for r in rows] == [(key.id, "predict", None)]
    assert token.split("_", 2)[2] not in listed.stdout

    revoked = runner.invoke(cli, [*base, "revoke", key.id])
    assert revoked.exit_code == 0
    assert store.authenticate(token) is None
    again = runner.invoke(cli, [*base, "revoke", key.id])
    assert again.exit_code == 1
    assert "already revoked" in again.output
