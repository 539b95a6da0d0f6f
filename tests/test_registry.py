"""The registry: versions, atomic writes, concurrent registers, aliases, checksums."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from berth.errors import ChecksumMismatch, Conflict, InvalidInput, ModelNotFound, VersionNotFound
from berth.registry import Registry, sha256_file
from berth.types import ModelCard, Signature
from tests.fakes import register_fake


def _card() -> ModelCard:
    return ModelCard(
        framework="fake",
        format="fake",
        artifact="a.bin",
        task="regression",
        signature=Signature(kind="tabular", n_features=2),
    )


def _artifact(tmp_path: Path, content: bytes = b"weights") -> Path:
    path = tmp_path / "a.bin"
    path.write_bytes(content)
    return path


def test_versions_are_assigned_in_order(registry: Registry, tmp_path: Path) -> None:
    cards = [registry.register("m", [_artifact(tmp_path, bytes([i]))], _card()) for i in range(3)]
    assert [c.version for c in cards] == [1, 2, 3]
    assert registry.versions("m") == [1, 2, 3]
    assert registry.resolve("m") == 3
    assert registry.resolve("m", "latest") == 3
    assert registry.resolve("m", "2") == 2


def test_card_round_trip_and_sha256(registry: Registry, tmp_path: Path) -> None:
    artifact = _artifact(tmp_path)
    stored = registry.register("m", [artifact], _card())
    loaded = registry.card("m", 1)
    assert loaded.name == "m"
    assert loaded.version == 1
    assert loaded.files == {"a.bin": sha256_file(artifact)}
    assert loaded.created_at is not None
    assert loaded == stored
    on_disk = json.loads((registry.path("m", 1) / "model.json").read_text())
    assert "name" not in on_disk  # the path is the single source of truth
    assert "version" not in on_disk


def test_failed_register_leaves_no_version(registry: Registry, tmp_path: Path) -> None:
    missing = tmp_path / "missing.bin"
    with pytest.raises(FileNotFoundError):
        registry.register("m", [_artifact(tmp_path), missing], _card())
    assert registry.versions("m") == []
    assert not any(p.name.startswith(".staging") for p in (registry.root / "m").iterdir())
    assert registry.register("m", [_artifact(tmp_path)], _card()).version == 1


KILLED_REGISTER = """
import sys, time
from pathlib import Path
from berth.registry import Registry
from berth.types import ModelCard, Signature
card = ModelCard(framework="fake", format="fake", artifact="big.bin", task="regression",
                 signature=Signature(kind="tabular", n_features=2))
def slow(_n):
    print("hashing", flush=True)
    time.sleep(0.05)
Registry(sys.argv[1]).register("m", [Path(sys.argv[2])], card, progress=slow)
"""


def test_kill_mid_register_leaves_no_visible_version(registry: Registry, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(64 * 1024 * 1024))  # 64 chunks -> about 3 s of slow hashing
    with subprocess.Popen(
        [sys.executable, "-c", KILLED_REGISTER, str(registry.root), str(big)],
        stdout=subprocess.PIPE,
    ) as process:
        assert process.stdout is not None
        assert (
            process.stdout.readline() == b"hashing\n"
        )  # the copy is written, hashing is under way
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert registry.versions("m") == []
    with pytest.raises(VersionNotFound):
        registry.resolve("m")
    assert registry.register("m", [_artifact(tmp_path)], _card()).version == 1


def _register_in_process(root: str, index: int) -> int:
    path = Path(root).parent / f"artifact-{index}" / "a.bin"
    path.parent.mkdir()
    path.write_bytes(f"artifact {index}".encode())
    return Registry(root).register("m", [path], _card()).version


def test_concurrent_registers_get_distinct_versions(registry: Registry) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        versions = pool.starmap(_register_in_process, [(str(registry.root), i) for i in range(8)])
    assert sorted(versions) == list(range(1, 9))
    contents = {(registry.path("m", v) / "a.bin").read_bytes() for v in versions}
    assert len(contents) == 8  # no version was overwritten by another
    for version in versions:
        registry.verify(registry.card("m", version))


def test_promote_and_rollback(registry: Registry, tmp_path: Path) -> None:
    for i in range(3):
        registry.register("m", [_artifact(tmp_path, bytes([i]))], _card())
    assert registry.set_alias("m", "production", 1) is None
    assert registry.set_alias("m", "production", 3) == 1
    assert registry.set_alias("m", "staging", 2) is None
    assert registry.aliases("m") == {"production": 3, "staging": 2}
    assert registry.resolve("m", "production") == 3
    assert registry.rollback("m", "production") == 1
    assert registry.aliases("m")["production"] == 1
    with pytest.raises(Conflict, match="no earlier version"):
        registry.rollback("m", "production")


def test_rollback_skips_deleted_versions(registry: Registry, tmp_path: Path) -> None:
    for i in range(3):
        registry.register("m", [_artifact(tmp_path, bytes([i]))], _card())
    registry.set_alias("m", "production", 1)
    registry.set_alias("m", "production", 2)
    registry.set_alias("m", "production", 3)
    registry.set_alias("m", "production", 1)
    registry.delete("m", 2)  # nothing points at 2 any more
    registry.set_alias("m", "production", 3)
    assert registry.rollback("m", "production") == 1
    assert registry.rollback("m", "production") == 3
    assert registry.rollback("m", "production") == 1


def test_delete_refused_while_an_alias_points_at_it(registry: Registry, tmp_path: Path) -> None:
    registry.register("m", [_artifact(tmp_path)], _card(), alias="production")
    registry.register("m", [_artifact(tmp_path)], _card())
    with pytest.raises(Conflict, match="still pointed at by alias production"):
        registry.delete("m", 1)
    registry.delete("m", 2)
    assert registry.versions("m") == [1]
    with pytest.raises(VersionNotFound):
        registry.delete("m", 2)


def test_errors_name_what_is_missing(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="model 'ghost' is not registered"):
        registry.versions("ghost")
    registry.register("m", [_artifact(tmp_path)], _card())
    with pytest.raises(VersionNotFound, match="has no version 9"):
        registry.set_alias("m", "production", 9)
    with pytest.raises(VersionNotFound, match=r"no alias 'staging' \(aliases: none\)"):
        registry.resolve("m", "staging")
    with pytest.raises(InvalidInput, match="invalid model name"):
        registry.register("../evil", [_artifact(tmp_path)], _card())
    with pytest.raises(InvalidInput, match="invalid alias"):
        registry.set_alias("m", "latest", 1)
    with pytest.raises(InvalidInput, match="invalid alias"):
        registry.set_alias("m", "42", 1)


def test_checksum_mismatch_names_the_file(registry: Registry) -> None:
    card = register_fake(registry, "m")
    registry.verify(card)
    (registry.path("m", 1) / "fake.bin").write_bytes(b"tampered")
    with pytest.raises(
        ChecksumMismatch,
        match=r"m@1: sha256 of fake\.bin is .* expected .*changed after registration",
    ):
        registry.verify(card)
    (registry.path("m", 1) / "fake.bin").unlink()
    with pytest.raises(ChecksumMismatch, match=r"file fake\.bin is missing"):
        registry.verify(card)


def test_models_lists_only_model_folders(registry: Registry, tmp_path: Path) -> None:
    registry.register("b", [_artifact(tmp_path)], _card())
    registry.register("a", [_artifact(tmp_path)], _card())
    (registry.root / ".hidden").mkdir()
    assert registry.models() == ["a", "b"]
    assert Registry(tmp_path / "nowhere").models() == []


def test_alias_writes_survive_concurrent_promotions(registry: Registry, tmp_path: Path) -> None:
    for i in range(4):
        registry.register("m", [_artifact(tmp_path, bytes([i]))], _card())
    started = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.starmap(_promote, [(str(registry.root), v) for v in (1, 2, 3, 4) for _ in range(3)])
    assert time.monotonic() - started < 60
    history = registry.alias_history("m", "production")
    assert len(history) >= 4  # every change was recorded, none lost to a torn write
    assert registry.aliases("m")["production"] == history[-1]


def _promote(root: str, version: int) -> None:
    Registry(root).set_alias("m", "production", version)
