"""API keys: shown once at creation, stored only as salted scrypt hashes, reloaded on change.

A key reads `berth_<id>_<secret>`. The id is public and finds the stored record without hashing
every key; the secret (32 random bytes) is checked with scrypt and a constant-time comparison.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import os
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from berth.errors import Conflict, InvalidInput, NotFound, RegistryError

__all__ = ["ApiKey", "KeyStore", "Scope", "default_keys_path"]

Scope = Literal["predict", "admin"]
SCOPES: tuple[Scope, ...] = ("predict", "admin")

_PREFIX = "berth"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
_CACHE_LIMIT = 4096


def default_keys_path(registry: Path) -> Path:
    return registry / ".berth" / "keys.json"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One stored key: who it is for and what it may call; never the secret itself."""

    id: str
    name: str
    scope: Scope
    model: str | None
    created_at: str
    salt: str
    hash: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def covers(self, scope: Scope, model: str | None) -> bool:
        """Whether this key may call a route that needs `scope` (for `model`, if one is named).

        An admin key covers every route; a predict key only inference, for its model if it has one.
        """
        if self.scope == "admin":
            return True
        if scope != "predict":
            return False
        return self.model is None or model is None or self.model == model

    def describe(self) -> str:
        return f"{self.scope}" + (f" on model {self.model!r}" if self.model else "")


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class KeyStore:
    """The keys file, read again whenever it changes (checked at most every `check_interval_s`)."""

    def __init__(self, path: Path, check_interval_s: float = 1.0) -> None:
        self.path = path
        self.check_interval_s = check_interval_s
        self._keys: dict[str, ApiKey] = {}
        self._signature: tuple[int, int, int] | None = None
        self._checked = float("-inf")
        self._lock = threading.Lock()
        # Verified secrets are remembered by a keyed digest, so scrypt runs once per key and
        # process; the digest key never leaves memory, so the cache is useless to anyone else.
        self._pepper = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, str] = OrderedDict()
        self._refused: OrderedDict[bytes, None] = OrderedDict()

    # -- reading ----------------------------------------------------------------------------

    def list_keys(self) -> list[ApiKey]:
        self._refresh()
        return sorted(self._keys.values(), key=lambda k: k.created_at)

    def has_active_keys(self) -> bool:
        self._refresh()
        return any(key.active for key in self._keys.values())

    def authenticate(self, token: str) -> ApiKey | None:
        """The active key `token` belongs to, or None (unknown, malformed, wrong or revoked)."""
        self._refresh()
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != _PREFIX:
            return None
        key = self._keys.get(parts[1])
        if key is None or not key.active:
            return None
        digest = hmac.digest(self._pepper, token.encode(), "sha256")
        with self._lock:
            if self._verified.get(digest) == key.id:
                return key
            if digest in self._refused:
                return None
        ok = hmac.compare_digest(_hash(parts[2], bytes.fromhex(key.salt)).hex(), key.hash)
        with self._lock:
            cache: OrderedDict[bytes, Any] = self._verified if ok else self._refused
            cache[digest] = key.id if ok else None
            if len(cache) > _CACHE_LIMIT:
                cache.popitem(last=False)
        return key if ok else None

    # -- writing (the CLI) ------------------------------------------------------------------

    def create(self, name: str, scope: str, model: str | None = None) -> tuple[ApiKey, str]:
        """A new key and its token; the token is returned here once and never stored."""
        if scope not in SCOPES:
            raise InvalidInput(f"unknown scope {scope!r}; expected one of {', '.join(SCOPES)}")
        if model is not None and scope != "predict":
            raise InvalidInput("--model narrows a predict key; admin keys cover every model")
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        with self._editing() as keys:
            key_id = secrets.token_hex(6)
            while key_id in keys:
                key_id = secrets.token_hex(6)
            key = ApiKey(
                id=key_id,
                name=name,
                scope="admin" if scope == "admin" else "predict",
                model=model,
                created_at=_now(),
                salt=salt.hex(),
                hash=_hash(secret, salt).hex(),
            )
            keys[key_id] = key
        return key, f"{_PREFIX}_{key_id}_{secret}"

    def revoke(self, key_id: str) -> ApiKey:
        """Mark a key revoked (the record stays, for the audit trail); servers notice within seconds."""
        with self._editing() as keys:
            key = keys.get(key_id)
            if key is None:
                raise NotFound(f"no API key with id {key_id!r} in {self.path}")
            if not key.active:
                raise Conflict(f"API key {key_id!r} was already revoked at {key.revoked_at}")
            keys[key_id] = replace(key, revoked_at=_now())
            return keys[key_id]

    # -- file handling ----------------------------------------------------------------------

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.check_interval_s:
            return
        self._checked = now
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            signature = None
        else:
            signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if signature != self._signature:
            keys = self._read() if signature is not None else {}
            with self._lock:
                self._keys, self._signature = keys, signature
                self._verified.clear()
                self._refused.clear()

    def _read(self) -> dict[str, ApiKey]:
        try:
            data = orjson.loads(self.path.read_bytes())
            return {item["id"]: ApiKey(**item) for item in data["keys"]}
        except FileNotFoundError:
            return {}
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise RegistryError(f"{self.path} is not a valid keys file: {exc}") from exc

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, ApiKey]]:
        """Read, let the caller change, and write back atomically, under an exclusive file lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (self.path.parent / ".keys.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            keys = self._read()
            yield keys
            body = orjson.dumps(
                {"keys": [asdict(k) for k in keys.values()]}, option=orjson.OPT_INDENT_2
            )
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keys-")
            with os.fdopen(fd, "wb") as handle:  # mkstemp makes the file 0600
                handle.write(body)
            Path(tmp).replace(self.path)
        self._checked = float("-inf")
