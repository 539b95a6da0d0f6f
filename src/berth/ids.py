"""Unique ids for requests and records without a system call per id.

`uuid4()` and `os.urandom()` each read the kernel's random source; on the request path that
system call also hands the GIL to whichever thread is waiting for it. An id here is a random
per-process prefix (64 bits, drawn again in every forked child) and a counter: 32 hex digits,
like a UUID's.
"""

from __future__ import annotations

import itertools
import os

__all__ = ["new_id"]

_prefix = ""
_counter = itertools.count()


def _reseed() -> None:
    global _prefix, _counter
    _prefix = os.urandom(8).hex()
    _counter = itertools.count()


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_id() -> str:
    """A new id, unique across processes and restarts (with overwhelming probability)."""
    return f"{_prefix}{next(_counter) & 0xFFFFFFFFFFFFFFFF:016x}"
