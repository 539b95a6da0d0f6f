"""The public API is what `berth/__init__.py` exports, and every name there is importable."""

from __future__ import annotations

import berth


def test_exported_members() -> None:
    for name in berth.__all__:
        assert getattr(berth, name) is not None, name
    assert set(berth.__all__) == {
        "BerthError",
        "Model",
        "ModelCard",
        "Outputs",
        "Registry",
        "Settings",
        "Signature",
        "__version__",
    }
    assert berth.Model.__module__ == "berth.runtimes.base"
