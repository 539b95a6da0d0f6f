"""The registry on object storage (S3-compatible or GCS, through fsspec), as safe as the local one.

Object stores have no rename, so the local trick (write a staging folder, rename it into place)
becomes create-only writes (S3 `If-None-Match: *`, GCS `ifGenerationMatch=0`):

    <prefix>/<name>/<version>/.claim        created first, create-only: two registers racing for
                                            the same number cannot both win; the loser takes N+1
    <prefix>/<name>/<version>/<files>       uploaded by the winner, invisible so far
    <prefix>/<name>/<version>/model.json    written last: a version exists only once it has this,
                                            so readers never see half a version
    <prefix>/<name>/aliases/<seq>.json      alias state, one object per change, create-only: a
                                            compare-and-swap on the sequence number

A crash leaves at most a claimed number without a model.json, which nobody lists and the next
register skips. Versions are downloaded to a local cache folder before loading, and their sha256
pins are checked there, as for the local registry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from berth.errors import (
    Conflict,
    InvalidInput,
    MissingExtra,
    ModelNotFound,
    RegistryError,
)
from berth.registry.hashing import sha256_file
from berth.registry.store import (
    CARD_FILE,
    NAME_PATTERN,
    Progress,
    Registry,
    _check_alias,
    _check_name,
    stored_name,
)
from berth.types import ModelCard, utcnow

__all__ = ["ObjectRegistry"]

T = TypeVar("T")

CLAIM_FILE = ".claim"
ALIASES_DIR = "aliases"
EXTRAS = {"s3": "s3", "gs": "gcs", "gcs": "gcs", "memory": "s3"}
ATTEMPTS = 100


def _filesystem(protocol: str) -> Any:
    try:
        import fsspec

        return fsspec.filesystem(protocol, skip_instance_cache=True, use_listings_cache=False)
    except ImportError as exc:
        extra = EXTRAS.get(protocol, protocol)
        raise MissingExtra(
            f"a registry on {protocol}:// needs {exc.name}: pip install 'berth[{extra}]'"
        ) from exc
    except ValueError as exc:
        raise InvalidInput(f"unsupported registry URL scheme {protocol!r}: {exc}") from None


def _exists_error(exc: BaseException) -> bool:
    """Whether a create-only write failed because the object already exists."""
    if isinstance(exc, FileExistsError):
        return True
    text = str(exc)
    return "412" in text or "PreconditionFailed" in text or "conditionNotMet" in text


class ObjectRegistry(Registry):
    """A `Registry` whose versions and aliases live in a bucket; `path()` is a local cache."""

    def __init__(self, url: str, cache: Path, filesystem: Any = None) -> None:
        protocol, sep, rest = url.partition("://")
        if not sep or not rest.strip("/"):
            raise InvalidInput(f"registry URL must look like s3://bucket/prefix, got {url!r}")
        self.url = url.rstrip("/")
        self.base = rest.strip("/")
        self.fs = filesystem if filesystem is not None else _filesystem(protocol)
        super().__init__(cache / hashlib.sha256(self.url.encode()).hexdigest()[:16])

    @property
    def location(self) -> str:
        return self.url

    # -- reading ----------------------------------------------------------------------------

    def models(self) -> list[str]:
        try:
            entries = self.fs.ls(self.base, detail=True)
        except FileNotFoundError:
            return []
        names = (
            e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "directory"
        )
        return sorted(n for n in names if NAME_PATTERN.match(n))

    def versions(self, name: str) -> list[int]:
        folder = f"{self.base}/{_check_name(name)}"
        cards = self.fs.glob(f"{folder}/*/{CARD_FILE}")
        numbers = sorted(
            int(part) for part in (c.rsplit("/", 2)[-2] for c in cards) if part.isdigit()
        )
        if not numbers and not self.fs.exists(folder):
            raise ModelNotFound(f"model {name!r} is not registered in {self.url}")
        return numbers

    def card(self, name: str, version: str | int | None = None) -> ModelCard:
        number = self.resolve(name, version)
        key = f"{self.base}/{name}/{number}/{CARD_FILE}"
        try:
            card = ModelCard.model_validate_json(self.fs.cat_file(key))
        except (OSError, ValueError) as exc:
            raise RegistryError(
                f"cannot read {self.url}/{name}/{number}/{CARD_FILE}: {exc}"
            ) from exc
        return card.model_copy(update={"name": name, "version": number})

    def path(self, name: str, version: int) -> Path:
        """The local copy of a version, downloaded on first use (checksums: see `verify`)."""
        local = self.root / _check_name(name) / str(version)
        if (local / CARD_FILE).is_file():
            return local
        card = self.card(name, version)
        local.parent.mkdir(parents=True, exist_ok=True)
        staging = local.parent / f".download-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            for filename in [*card.files, CARD_FILE]:
                self.fs.get_file(
                    f"{self.base}/{name}/{version}/{filename}", str(staging / filename)
                )
            try:
                staging.rename(local)
            except OSError:  # another process finished the same download first
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return local

    # -- writing ----------------------------------------------------------------------------

    def register(
        self,
        name: str,
        files: list[Path],
        card: ModelCard,
        *,
        alias: str | None = None,
        progress: Progress | None = None,
        base: Path | None = None,
    ) -> ModelCard:
        _check_name(name)
        if alias is not None:
            _check_alias(alias)
        names = {source: stored_name(source, base) for source in files}
        hashes = {names[source]: sha256_file(source, progress) for source in files}
        stored = card.model_copy(update={"files": hashes, "created_at": utcnow()})
        version = self._claim(name)
        folder = f"{self.base}/{name}/{version}"
        try:
            for source in files:
                self.fs.put_file(str(source), f"{folder}/{names[source]}")
            body = stored.model_dump_json(indent=2, exclude={"name", "version"}) + "\n"
            self.fs.pipe_file(f"{folder}/{CARD_FILE}", body.encode(), mode="create")
        except BaseException:
            self._remove(folder)
            raise
        if alias is not None:
            self.set_alias(name, alias, version)
        return stored.model_copy(update={"name": name, "version": version})

    def delete(self, name: str, version: int) -> None:
        self.resolve(name, version)
        pointing = sorted(a for a, v in self.aliases(name).items() if v == version)
        if pointing:
            raise Conflict(
                f"{name}@{version} is still pointed at by alias {', '.join(pointing)}: "
                "promote another version first"
            )
        folder = f"{self.base}/{name}/{version}"
        self.fs.rm_file(f"{folder}/{CARD_FILE}")  # unpublished from here on
        self._remove(folder)
        shutil.rmtree(self.root / name / str(version), ignore_errors=True)

    # -- internals --------------------------------------------------------------------------

    def _claim(self, name: str) -> int:
        folder = f"{self.base}/{name}"
        taken = [
            int(p.rstrip("/").rsplit("/", 1)[-1])
            for p in (self.fs.ls(folder, detail=False) if self.fs.exists(folder) else [])
            if p.rstrip("/").rsplit("/", 1)[-1].isdigit()
        ]
        version = max(taken, default=0) + 1
        for _ in range(ATTEMPTS):
            try:
                self.fs.pipe_file(
                    f"{folder}/{version}/{CLAIM_FILE}", uuid.uuid4().hex.encode(), mode="create"
                )
            except Exception as exc:
                if not _exists_error(exc):
                    raise RegistryError(f"cannot write to {self.url}/{name}: {exc}") from exc
                version += 1
                continue
            return version
        raise RegistryError(f"could not claim a version number in {self.url}/{name}")

    def _remove(self, folder: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(folder, recursive=True)

    def _alias_entries(self, name: str) -> list[int]:
        folder = f"{self.base}/{_check_name(name)}/{ALIASES_DIR}"
        try:
            keys = self.fs.ls(folder, detail=False)
        except FileNotFoundError:
            return []
        stems = (k.rsplit("/", 1)[-1].removesuffix(".json") for k in keys)
        return sorted(int(s) for s in stems if s.isdigit())

    def _read_state(self, name: str) -> tuple[int, dict[str, Any]]:
        entries = self._alias_entries(name)
        if not entries:
            self.versions(name)  # ModelNotFound for an unknown model
            return 0, {"aliases": {}, "history": {}}
        key = f"{self.base}/{name}/{ALIASES_DIR}/{entries[-1]:010d}.json"
        try:
            state = json.loads(self.fs.cat_file(key))
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read {key}: {exc}") from exc
        state.setdefault("aliases", {})
        state.setdefault("history", {})
        return entries[-1], state

    def _read_aliases(self, name: str) -> dict[str, Any]:
        return self._read_state(name)[1]

    def _update_aliases(self, name: str, change: Callable[[dict[str, Any]], tuple[T, bool]]) -> T:
        for _ in range(ATTEMPTS):
            sequence, state = self._read_state(name)
            result, changed = change(state)
            if not changed:
                return result
            key = f"{self.base}/{name}/{ALIASES_DIR}/{sequence + 1:010d}.json"
            try:
                self.fs.pipe_file(key, json.dumps(state, sort_keys=True).encode(), mode="create")
            except Exception as exc:
                if not _exists_error(exc):
                    raise RegistryError(f"cannot write {key}: {exc}") from exc
                continue  # someone else changed the aliases first: read again, apply again
            return result
        raise RegistryError(f"could not update the aliases of {name!r}: too much contention")
