"""A model file on an HTTP URL, pinned by sha256, from a real http.server on loopback."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from berth.registry import Registry
from tests.conftest import ClientFactory
from tests.formats import berth, flat, predict_rest, register_ok


@pytest.fixture
def served_folder(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    folder = tmp_path / "www"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_register_from_url_pinned_by_sha256(
    served_folder: tuple[str, Path], registry: Registry, make_client: ClientFactory
) -> None:
    base, folder = served_folder
    x, y = load_iris(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), folder / "iris.joblib")
    digest = hashlib.sha256((folder / "iris.joblib").read_bytes()).hexdigest()
    url = f"{base}/iris.joblib"

    unpinned = berth(registry, "models", "register", url, "--name", "iris")
    assert unpinned.exit_code == 1
    assert "a model from a URL must be pinned: give its --sha256" in flat(unpinned)
    wrong = berth(registry, "models", "register", url, "--name", "iris", "--sha256", "0" * 64)
    assert wrong.exit_code == 1
    assert f"sha256 is {digest}, expected {'0' * 64}" in flat(wrong)
    missing = berth(
        registry, "models", "register", f"{base}/nope.joblib", "--name", "iris", "--sha256", digest
    )
    assert "HTTP Error 404" in flat(missing)
    assert registry.models() == []

    register_ok(registry, url, "--name", "iris", "--sha256", digest.upper())
    card = registry.card("iris")
    assert card.files == {"iris.joblib": digest}
    assert card.tags == {"source": url, "source_sha256": digest}
    predictions, _ = predict_rest(make_client, registry, "iris", x[[0, 120]].tolist())
    assert [p["prediction"] for p in predictions] == [0, 2]
