"""Where prediction records are stored and how they read as JSON, without importing SQLAlchemy.

The server's start-up path imports this module, not `store`: SQLAlchemy (~0.2 s to import) loads
in each worker's prediction-log writer thread, after the worker is ready.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from berth.errors import MissingExtra

__all__ = ["LAZY_STORES", "json_dumps", "require_driver", "store_url"]

LAZY_STORES = ("sqlite:///", "postgresql+psycopg")
"""Store URLs whose driver `require_driver` checks without SQLAlchemy (others need it to tell)."""


def store_url(setting: str, state_dir: Path) -> str:
    """The SQLAlchemy URL for the `prediction_store` setting (PostgreSQL goes through psycopg 3)."""
    if not setting:
        return f"sqlite:///{state_dir / 'predictions.db'}"
    for prefix in ("postgresql://", "postgres://"):
        if setting.startswith(prefix):
            return "postgresql+psycopg://" + setting[len(prefix) :]
    return setting


def require_driver(url: str) -> None:
    """Raise MissingExtra when the store's database driver is not installed."""
    if url.startswith("postgresql+psycopg") and importlib.util.find_spec("psycopg") is None:
        raise MissingExtra(
            "a PostgreSQL prediction store needs psycopg: pip install 'berth[postgres]'"
        )


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):  # arrays orjson does not take as they are
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_dumps(value: Any) -> bytes:
    """JSON of a record's values; NumPy arrays are written directly (no Python lists between)."""
    return orjson.dumps(value, default=_plain, option=orjson.OPT_SERIALIZE_NUMPY)
