"""Safe model loading: a malicious pickle never runs, pickle can be refused, and a model from a
different major scikit-learn version is refused unless forced."""

from __future__ import annotations

import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LinearRegression

from berth.cli.main import cli
from berth.dataplane import DataPlane
from berth.errors import LibraryVersionMismatch, UnsafeModel
from berth.registry import Registry
from berth.settings import Settings
from berth.types import ModelCard, Signature


class WritesAFile:
    """Unpickling this runs `exec`, which writes `target`: the classic pickle payload."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"import pathlib; pathlib.Path({str(self.target)!r}).write_text('pwned')",))


def _plant(registry: Registry, artifact: Path, fmt: str) -> ModelCard:
    """Put an artifact in the registry as `berth models register` would (with real sha256 pins),
    without loading it: the attacker's file as it would reach a server."""
    card = ModelCard(
        framework="sklearn",
        format=fmt,
        artifact=artifact.name,
        task="regression",
        signature=Signature(kind="tabular", n_features=3),
        libraries={"scikit-learn": __import__("sklearn").__version__},
    )
    return registry.register("evil", [artifact], card, alias="production")


def _load(registry: Registry, **settings: object) -> None:
    plane = DataPlane(registry, Settings(registry=registry.root, **settings))
    try:
        plane.load_now("evil", 1)
    finally:
        plane._executor.shutdown()


@pytest.mark.parametrize("fmt", ["pickle", "joblib", "joblib-object-array"])
def test_malicious_artifact_is_refused_and_never_runs(tmp_path: Path, fmt: str) -> None:
    target = tmp_path / "pwned.txt"
    payload = WritesAFile(target)
    if fmt == "pickle":
        artifact = tmp_path / "model.pkl"
        artifact.write_bytes(pickle.dumps(payload))
    else:
        artifact = tmp_path / "model.joblib"
        # an object array is stored as a nested pickle inside the joblib file (CVE-2024-34997)
        obj = np.array([payload, 1], dtype=object) if fmt == "joblib-object-array" else payload
        joblib.dump({"model": obj}, artifact)
    registry = Registry(tmp_path / "registry")
    _plant(registry, artifact, "pickle" if fmt == "pickle" else "joblib")

    with pytest.raises(UnsafeModel) as refused:
        _load(registry)
    assert "refused to load builtins.exec" in refused.value.message
    assert "BERTH_TRUSTED_MODULES" in refused.value.message
    assert not target.exists()

    # the registration path (which inspects the file) refuses it as well
    result = CliRunner().invoke(
        cli,
        ["--registry", str(tmp_path / "r2"), "models", "register", str(artifact), "--name", "evil"],
    )
    assert result.exit_code == 1
    assert "refused to load builtins.exec" in result.output
    assert not target.exists()


def test_the_payload_is_real_when_pickle_is_trusted(tmp_path: Path) -> None:
    """Proof that the test above can fail: trusting the file runs the payload."""
    target = tmp_path / "pwned.txt"
    artifact = tmp_path / "model.pkl"
    artifact.write_bytes(pickle.dumps(WritesAFile(target)))
    registry = Registry(tmp_path / "registry")
    _plant(registry, artifact, "pickle")
    _load(registry, pickle_policy="trusted")
    assert target.read_text() == "pwned"


@pytest.mark.parametrize(
    "global_name",
    ["posix.system", "subprocess.Popen", "numpy.load", "numpy.memmap", "builtins.getattr"],
)
def test_dangerous_globals_are_refused(tmp_path: Path, global_name: str) -> None:
    module, name = global_name.rsplit(".", 1)
    # protocol 0: c<module>\n<name>\n ( ) R .  -- a call of that global with no arguments
    artifact = tmp_path / "model.pkl"
    artifact.write_bytes(f"c{module}\n{name}\n(tR.".encode())
    registry = Registry(tmp_path / "registry")
    _plant(registry, artifact, "pickle")
    with pytest.raises(UnsafeModel, match=f"refused to load {global_name}"):
        _load(registry)


def test_refuse_policy_refuses_pickle_and_joblib(tmp_path: Path) -> None:
    artifact = tmp_path / "model.joblib"
    model = LinearRegression().fit(np.eye(3), [1.0, 2.0, 3.0])
    joblib.dump(model, artifact)
    registry = Registry(tmp_path / "registry")
    _plant(registry, artifact, "joblib")
    _load(registry)  # a plain scikit-learn model loads under the default restricted policy
    with pytest.raises(UnsafeModel, match="BERTH_PICKLE_POLICY=refuse"):
        _load(registry, pickle_policy="refuse")


def test_trusted_modules_can_name_one_extra_function(tmp_path: Path) -> None:
    artifact = tmp_path / "model.pkl"
    artifact.write_bytes(pickle.dumps({"f": np.linalg.norm}))
    registry = Registry(tmp_path / "registry")
    _plant(registry, artifact, "pickle")
    with pytest.raises(UnsafeModel, match=r"refused to load numpy\.linalg\.norm"):
        _load(registry)
    _load(registry, trusted_modules=["sklearn", "numpy.linalg.norm"])  # named in full: allowed


def _with_recorded_sklearn(registry: Registry, version: str) -> None:
    folder = registry.path("evil", 1)
    card = ModelCard.model_validate_json((folder / "model.json").read_bytes())
    card.libraries["scikit-learn"] = version
    (folder / "model.json").write_text(card.model_dump_json(exclude={"name", "version"}))


def test_other_major_sklearn_version_is_refused_unless_forced(tmp_path: Path) -> None:
    artifact = tmp_path / "model.joblib"
    joblib.dump(LinearRegression().fit(np.eye(3), [1.0, 2.0, 3.0]), artifact)
    registry = Registry(tmp_path / "registry")
    _plant(registry, artifact, "joblib")
    _with_recorded_sklearn(registry, "0.24.2")
    with pytest.raises(
        LibraryVersionMismatch, match=r"registered with scikit-learn 0\.24\.2"
    ) as exc:
        _load(registry)
    assert "BERTH_FORCE_LIBRARY_VERSIONS" in exc.value.message
    _load(registry, force_library_versions=True)
