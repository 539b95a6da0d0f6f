"""Download a model file from an HTTP(S) URL, refusing it unless its sha256 matches the pin."""

from __future__ import annotations

import hashlib
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from berth.errors import ChecksumMismatch, InvalidInput, RegistryError

__all__ = ["download", "is_url"]

SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1024 * 1024


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def download(
    url: str,
    sha256: str | None,
    folder: Path,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Stream `url` into `folder` under its own file name; the file exists only if the hash matched.

    `progress` is called with (bytes so far, total bytes or None).
    """
    if sha256 is None:
        raise InvalidInput(
            f"{url}: a model from a URL must be pinned: give its --sha256 "
            "(e.g. from `sha256sum FILE` where it was built)"
        )
    expected = sha256.lower()
    if not SHA256.match(expected):
        raise InvalidInput(f"--sha256 must be 64 hexadecimal digits, got {sha256!r}")
    name = Path(urllib.parse.urlparse(url).path).name
    if not name or name in (".", ".."):
        raise InvalidInput(f"{url}: the URL must end with the model's file name")
    target = folder / name
    partial = folder / f".{name}.part"
    digest = hashlib.sha256()
    try:
        with (
            urllib.request.urlopen(url, timeout=timeout) as response,
            partial.open("wb") as handle,
        ):
            length = response.headers.get("Content-Length")
            total = int(length) if length else None
            done = 0
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                handle.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise RegistryError(f"cannot download {url}: {exc}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    actual = digest.hexdigest()
    if actual != expected:
        partial.unlink(missing_ok=True)
        raise ChecksumMismatch(
            f"{url}: sha256 is {actual}, expected {expected}: the file is not the one pinned"
        )
    partial.replace(target)
    return target
