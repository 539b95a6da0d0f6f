"""Shared fixtures: registries with the example models (trained once per session) and app clients."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from berth.examples.train import EXAMPLES, register_example
from berth.registry import Registry
from berth.server import create_app
from berth.settings import Settings
from tests.fakes import install_fake_runtime


@pytest.fixture(scope="session")
def _trained_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four example models, trained and registered once for the whole session (read-only)."""
    root = tmp_path_factory.mktemp("trained") / "registry"
    registry = Registry(root)
    settings = Settings(registry=root)
    for name, train in EXAMPLES.items():
        register_example(registry, name, train(), settings)
    return root


@pytest.fixture
def examples_registry(_trained_root: Path, tmp_path: Path) -> Registry:
    """A private copy of the trained examples registry, free to change."""
    root = tmp_path / "registry"
    shutil.copytree(_trained_root, root)
    return Registry(root)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """An empty registry, with the fake runtime installed."""
    install_fake_runtime()
    return Registry(tmp_path / "registry")


ClientFactory = Callable[..., AbstractContextManager[TestClient]]


@pytest.fixture
def make_client() -> ClientFactory:
    """`with make_client(registry, models=[...], **settings) as client:` runs the app's lifespan.

    Requests come from 127.0.0.1 (as from a local user: admin routes answer while no API key
    exists); `client=("203.0.113.9", 4000)` makes them come from elsewhere.
    """

    @contextmanager
    def factory(
        registry: Registry, client: tuple[str, int] = ("127.0.0.1", 50000), **overrides: Any
    ) -> Iterator[TestClient]:
        settings = Settings(registry=registry.root, **overrides)
        app = create_app(settings)
        with TestClient(app, raise_server_exceptions=False, client=client) as test_client:
            yield test_client

    return factory
