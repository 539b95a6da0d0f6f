"""The model registry on a local folder: `<root>/<name>/<version>/` plus `<root>/<name>/aliases.json`.

A version becomes visible in one `rename` of a fully written staging folder, so a crash mid-register
leaves no half version, and two concurrent registers race only for the folder name: the loser retries
with the next number. Alias changes are serialised by an advisory lock per model.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from berth.errors import (
    ChecksumMismatch,
    Conflict,
    InvalidInput,
    ModelNotFound,
    RegistryError,
    VersionNotFound,
)
from berth.registry.hashing import sha256_file
from berth.types import ModelCard, utcnow

__all__ = ["Registry", "parse_ref", "stored_name"]

CARD_FILE = "model.json"
ALIASES_FILE = "aliases.json"
ROUTE_FILE = "route.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
ALIAS_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
RESERVED_ALIASES = {"latest"}

if TYPE_CHECKING:
    from berth.settings import Settings

Progress = Callable[[int], None]
T = TypeVar("T")


def parse_ref(ref: str) -> tuple[str, str | None]:
    """Split `NAME[@VERSION|@ALIAS]` into its parts."""
    name, _, version = ref.partition("@")
    return name, (version or None)


def stored_name(source: Path, base: Path | None) -> str:
    """The name a file gets inside a version: its path relative to `base`, or its own name."""
    if base is None:
        return source.name
    relative = source.resolve().relative_to(base.resolve()).as_posix()
    if relative.startswith("../") or relative in ("", "."):
        raise InvalidInput(f"{source} is not inside {base}")
    return relative


def _check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise InvalidInput(
            f"invalid model name {name!r}: use letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit, at most 100 characters)"
        )
    return name


def _check_alias(alias: str) -> str:
    if not ALIAS_PATTERN.match(alias) or alias in RESERVED_ALIASES:
        raise InvalidInput(
            f"invalid alias {alias!r}: start with a letter, then letters, digits, '_' or '-' "
            f"(not {', '.join(sorted(RESERVED_ALIASES))})"
        )
    return alias


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


class Registry:
    """Versions, aliases and checksums of models in one root folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @staticmethod
    def from_settings(settings: Settings) -> Registry:
        """The registry the settings name: `registry_url` (object storage) or the local folder."""
        if settings.registry_url:
            from berth.registry.objectstore import ObjectRegistry

            cache = settings.registry_cache or Path.home() / ".cache" / "berth" / "registry"
            return ObjectRegistry(settings.registry_url, cache)
        return Registry(settings.registry)

    @property
    def location(self) -> str:
        """Where the registry lives, for messages: a folder or a URL."""
        return str(self.root)

    # -- reading ----------------------------------------------------------------------------

    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and NAME_PATTERN.match(p.name)
        )

    def versions(self, name: str) -> list[int]:
        folder = self.root / _check_name(name)
        if not folder.is_dir():
            raise ModelNotFound(f"model {name!r} is not registered in {self.location}")
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir())

    def aliases(self, name: str) -> dict[str, int]:
        return dict(self._read_aliases(name)["aliases"])

    def alias_history(self, name: str, alias: str) -> list[int]:
        return list(self._read_aliases(name)["history"].get(alias, []))

    def resolve(self, name: str, version: str | int | None = None) -> int:
        """The version number that `version` (a number, an alias, `latest` or None) names."""
        versions = self.versions(name)
        if version is None or version == "latest":
            if not versions:
                raise VersionNotFound(f"model {name!r} has no versions")
            return versions[-1]
        if isinstance(version, int) or version.isdigit():
            number = int(version)
            if number not in versions:
                raise VersionNotFound(f"model {name!r} has no version {number}")
            return number
        aliases = self.aliases(name)
        if version not in aliases:
            known = ", ".join(sorted(aliases)) or "none"
            raise VersionNotFound(f"model {name!r} has no alias {version!r} (aliases: {known})")
        return aliases[version]

    def card(self, name: str, version: str | int | None = None) -> ModelCard:
        number = self.resolve(name, version)
        path = self.path(name, number) / CARD_FILE
        try:
            card = ModelCard.model_validate_json(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read {path}: {exc}") from exc
        return card.model_copy(update={"name": name, "version": number})

    def path(self, name: str, version: int) -> Path:
        return self.root / _check_name(name) / str(version)

    def verify(self, card: ModelCard, progress: Progress | None = None) -> None:
        """Check every file of a version against its recorded sha256."""
        folder = self.path(card.name, card.version)
        for filename, expected in card.files.items():
            path = folder / filename
            if not path.is_file():
                raise ChecksumMismatch(f"{card.ref}: file {filename} is missing from {folder}")
            actual = sha256_file(path, progress)
            if actual != expected:
                raise ChecksumMismatch(
                    f"{card.ref}: sha256 of {filename} is {actual[:12]}..., expected "
                    f"{expected[:12]}... as registered; the file was changed after registration"
                )

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
        """Copy `files` into a new version with `card` as its metadata; returns the stored card.

        Files keep their path relative to `base` (a model folder with subfolders), else their name.
        """
        folder = self.root / _check_name(name)
        if alias is not None:
            _check_alias(alias)
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            hashes: dict[str, str] = {}
            for source in files:
                relative = stored_name(source, base)
                target = staging / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
                hashes[relative] = sha256_file(target, progress)
            stored = card.model_copy(update={"files": hashes, "created_at": utcnow()})
            stored_json = stored.model_dump_json(indent=2, exclude={"name", "version"})
            (staging / CARD_FILE).write_text(stored_json + "\n")
            version = self._publish(folder, staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if alias is not None:
            self.set_alias(name, alias, version)
        return stored.model_copy(update={"name": name, "version": version})

    def set_alias(self, name: str, alias: str, version: int) -> int | None:
        """Point `alias` at `version`; returns the version it pointed at before."""
        _check_alias(alias)

        def change(state: dict[str, Any]) -> tuple[int | None, bool]:
            if version not in self.versions(name):
                raise VersionNotFound(f"model {name!r} has no version {version}")
            previous = state["aliases"].get(alias)
            if previous == version:
                return previous, False
            state["aliases"][alias] = version
            state["history"].setdefault(alias, []).append(version)
            return previous, True

        return self._update_aliases(name, change)

    def rollback(self, name: str, alias: str) -> int:
        """Point `alias` back at the version it pointed at before the last change."""

        def change(state: dict[str, Any]) -> tuple[int, bool]:
            history: list[int] = state["history"].get(alias, [])
            existing = set(self.versions(name))
            while len(history) > 1:
                history.pop()
                if history[-1] in existing:
                    state["aliases"][alias] = history[-1]
                    return history[-1], True
            raise Conflict(
                f"alias {alias!r} of model {name!r} has no earlier version to roll back to"
            )

        return self._update_aliases(name, change)

    def remove_alias(self, name: str, alias: str) -> None:
        def change(state: dict[str, Any]) -> tuple[None, bool]:
            if state["aliases"].pop(alias, None) is None:
                raise VersionNotFound(f"model {name!r} has no alias {alias!r}")
            state["history"].pop(alias, None)
            return None, True

        self._update_aliases(name, change)

    def delete(self, name: str, version: int) -> None:
        """Delete one version; refused while an alias points at it."""
        with self._locked(name):
            self.resolve(name, version)
            pointing = sorted(a for a, v in self.aliases(name).items() if v == version)
            if pointing:
                raise Conflict(
                    f"{name}@{version} is still pointed at by alias {', '.join(pointing)}: "
                    "promote another version first"
                )
            trash = self.root / name / f".trash-{uuid.uuid4().hex}"
            self.path(name, version).rename(trash)
            shutil.rmtree(trash, ignore_errors=True)

    def route(self, name: str) -> dict[str, Any] | None:
        """The stored traffic route of `name` (see berth.router.Route), or None."""
        path = self.root / _check_name(name) / ROUTE_FILE
        if not path.exists():
            return None
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read {path}: {exc}") from exc
        return data

    def set_route(self, name: str, route: dict[str, Any] | None) -> None:
        """Store (or, with None, remove) the traffic route of `name`."""
        with self._locked(name):
            path = self.root / name / ROUTE_FILE
            if route is None:
                path.unlink(missing_ok=True)
            else:
                _write_json_atomic(path, route)

    # -- internals --------------------------------------------------------------------------

    def _publish(self, folder: Path, staging: Path) -> int:
        for _attempt in range(1000):
            existing = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
            version = max(existing, default=0) + 1
            try:
                # rename(2) onto an existing, non-empty directory fails: that is our race guard.
                staging.rename(folder / str(version))
            except OSError:
                continue
            return version
        raise RegistryError(f"could not allocate a version folder in {folder}")

    def _update_aliases(self, name: str, change: Callable[[dict[str, Any]], tuple[T, bool]]) -> T:
        """Apply `change` to the alias state under the model's lock; it says whether to write."""
        with self._locked(name):
            state = self._read_aliases(name)
            result, changed = change(state)
            if changed:
                self._write_aliases(name, state)
            return result

    def _read_aliases(self, name: str) -> dict[str, Any]:
        path = self.root / _check_name(name) / ALIASES_FILE
        if not (self.root / name).is_dir():
            raise ModelNotFound(f"model {name!r} is not registered in {self.location}")
        if not path.exists():
            return {"aliases": {}, "history": {}}
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read {path}: {exc}") from exc
        data.setdefault("aliases", {})
        data.setdefault("history", {})
        return data  # type: ignore[no-any-return]

    def _write_aliases(self, name: str, state: dict[str, Any]) -> None:
        _write_json_atomic(self.root / name / ALIASES_FILE, state)

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        folder = self.root / _check_name(name)
        if not folder.is_dir():
            raise ModelNotFound(f"model {name!r} is not registered in {self.location}")
        with (folder / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
