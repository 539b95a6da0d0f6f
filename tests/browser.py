"""Headless Chromium from the command line: the DOM after scripts ran, console lines, screenshots."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ARTIFACTS = Path(
    os.environ.get("BERTH_TEST_ARTIFACTS", Path(__file__).parents[1] / "build" / "test-artifacts")
)
_CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]? (.*)")


def chromium_or_skip() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed (apt-get install -y chromium)")


@dataclass
class PageLoad:
    dom: str
    console: list[str]


def _run(url: str, *flags: str, budget_ms: int = 4000) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [
                chromium_or_skip(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--enable-logging=stderr",
                "--v=0",
                f"--virtual-time-budget={budget_ms}",
                *flags,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )


def load(url: str, budget_ms: int = 4000) -> PageLoad:
    """The page's DOM once scripts ran for `budget_ms` of virtual time, and every console line."""
    result = _run(url, "--dump-dom", budget_ms=budget_ms)
    console = [m.group(1) for line in result.stderr.splitlines() if (m := _CONSOLE.search(line))]
    return PageLoad(result.stdout, console)


def screenshot(url: str, path: Path, size: str = "1280,900", budget_ms: int = 4000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _run(url, f"--screenshot={path}", f"--window-size={size}", budget_ms=budget_ms)
    return path
