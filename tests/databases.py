"""Prediction-store URLs for tests: a SQLite file, or a private schema in the test PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest

ENV = "BERTH_TEST_DATABASE_URL"


def postgres_url_or_skip() -> str:
    url = os.environ.get(ENV)
    if not url:
        pytest.skip(f"{ENV} is not set (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    return url


@contextmanager
def private_schema(url: str) -> Iterator[str]:
    """A fresh schema in the database at `url`; yields a URL whose search_path is that schema."""
    import psycopg

    schema = f"berth_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        separator = "&" if "?" in url else "?"
        yield f"{url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def with_port(url: str, port: int) -> str:
    """The same URL pointing at 127.0.0.1:`port` (a proxy, or a port nobody listens on)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def target_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5432
