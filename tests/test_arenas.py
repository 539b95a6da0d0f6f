"""The server's malloc-arena cap, measured with glibc's own `malloc_info` in a fresh interpreter."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from berth.server.arenas import limit_malloc_arenas

# Eight threads each allocate (and keep) blocks too large for Python's own small-object allocator,
# so each asks glibc for memory; then glibc's XML report lists one <heap> per arena.
_COUNT_ARENAS = """
import ctypes, sys, tempfile, threading
from berth.server.arenas import limit_malloc_arenas

print(limit_malloc_arenas() if sys.argv[1] == "limit" else None, file=sys.stderr)
kept = []
started = threading.Barrier(8)

def allocate():
    started.wait()  # all alive at once, so that none can hand its arena on to the next
    kept.extend(bytearray(4096) for _ in range(100))
    started.wait()

threads = [threading.Thread(target=allocate) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
with tempfile.NamedTemporaryFile(suffix=".xml") as report:
    stream = libc.fopen(report.name.encode(), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    print(open(report.name).read().count("<heap nr="))
"""


def _glibc() -> bool:
    try:
        return hasattr(ctypes.CDLL(None), "malloc_info")
    except OSError:
        return False


def _arenas(mode: str, **env: str) -> int:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    done = subprocess.run(
        [sys.executable, "-c", _COUNT_ARENAS, mode],
        env=environ,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(done.stdout)


@pytest.mark.skipif(not _glibc(), reason="malloc arenas are glibc's")
def test_the_limit_caps_the_arenas_of_new_threads() -> None:
    assert _arenas("default") > 2  # glibc's own default: one arena per new thread, 8 per core
    assert _arenas("limit") <= 2


@pytest.mark.skipif(not _glibc(), reason="malloc arenas are glibc's")
def test_an_arena_max_set_by_the_user_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False
    arenas = _arenas("limit", MALLOC_ARENA_MAX="4")
    assert 2 < arenas <= 4
