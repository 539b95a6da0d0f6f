"""PyTorch: TorchScript files, state_dict + module class, and the scikit-learn compatible wrapper.

Skipped where torch is absent (it is not in the `test` extra: `make test-formats` installs it).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris

from berth.registry import Registry
from tests.conftest import ClientFactory
from tests.formats import berth, flat, predict_rest, register_ok

torch = pytest.importorskip("torch")
nn = torch.nn


def script(module: object) -> object:
    with warnings.catch_warnings():  # deprecated in torch 2.13, still what many teams ship
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(module)


class Net(nn.Module):  # type: ignore[misc]
    """Imported by path when its state_dict is registered."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, 1)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.linear(x) * 2.0


def test_torchscript_classifier(
    tmp_path: Path, registry: Registry, make_client: ClientFactory
) -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    script(module).save(tmp_path / "net.pt")
    register_ok(
        registry,
        str(tmp_path / "net.pt"),
        "--name",
        "net",
        "--n-features",
        "4",
        "--classes",
        "a,b,c",
    )
    rows = np.random.default_rng(1).normal(size=(5, 4))
    predictions, info = predict_rest(make_client, registry, "net", rows.tolist())
    with torch.no_grad():
        expected = torch.softmax(module(torch.as_tensor(rows, dtype=torch.float32)), dim=1).numpy()
    got = np.array([list(p["probabilities"].values()) for p in predictions])
    assert np.allclose(got, expected, atol=1e-6)
    assert [p["prediction"] for p in predictions] == [
        ["a", "b", "c"][i] for i in expected.argmax(axis=1)
    ]
    assert (info["framework"], info["format"], info["task"]) == (
        "torch",
        "torchscript",
        "classification",
    )
    assert info["options"] == {"outputs": "logits"}
    assert info["libraries"]["torch"] == torch.__version__


def test_torch_export_program(
    tmp_path: Path, registry: Registry, make_client: ClientFactory
) -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(2, 2))
    batch = torch.export.Dim("batch")
    program = torch.export.export(module, (torch.zeros(2, 2),), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "net.pt2")
    register_ok(registry, str(tmp_path / "net.pt2"), "--name", "exported", "--n-features", "2")
    rows = [[1.0, 2.0], [0.0, -1.0], [3.0, 3.0]]
    predictions, info = predict_rest(make_client, registry, "exported", rows)
    with torch.no_grad():
        expected = module(torch.tensor(rows)).argmax(dim=1).tolist()
    assert [p["prediction"] for p in predictions] == expected
    assert (info["format"], info["classes"]) == ("torch.export", [0, 1])


def test_state_dict_with_module_class(
    tmp_path: Path, registry: Registry, make_client: ClientFactory
) -> None:
    torch.manual_seed(0)
    net = Net(3)
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    register_ok(
        registry,
        str(tmp_path / "weights.pt"),
        "--name",
        "linear",
        "--class",
        "tests.test_format_torch:Net",
        "--init-args",
        '{"n_features": 3}',
        "--feature-names",
        "x,y,z",
    )
    row = {"x": 1.0, "y": -2.0, "z": 0.5}
    predictions, info = predict_rest(make_client, registry, "linear", [row])
    with torch.no_grad():
        expected = float(net(torch.tensor([[1.0, -2.0, 0.5]]))[0, 0])
    assert predictions[0]["prediction"] == pytest.approx(expected, abs=1e-6)
    assert (info["format"], info["task"]) == ("state_dict", "regression")
    assert info["options"]["model_class"] == "tests.test_format_torch:Net"


def test_torch_registration_errors(tmp_path: Path, registry: Registry) -> None:
    torch.save(Net(3).state_dict(), tmp_path / "weights.pt")
    no_class = berth(registry, "models", "register", str(tmp_path / "weights.pt"), "--name", "w")
    assert no_class.exit_code == 1
    assert "(for a state_dict, give the module with --class)" in flat(no_class)
    script(Net(3)).save(tmp_path / "net.pt")
    no_width = berth(registry, "models", "register", str(tmp_path / "net.pt"), "--name", "w")
    assert "does not record its input width: give --n-features or --feature-names" in flat(no_width)
    wrong_width = berth(
        registry, "models", "register", str(tmp_path / "net.pt"), "--name", "w", "--n-features", "5"
    )
    assert "net.pt failed on a batch of shape (4, 5)" in flat(wrong_width)


def test_pytorch_estimator_registers_like_any_estimator(
    tmp_path: Path, registry: Registry, make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from berth.estimators import PyTorchClassifier, PyTorchRegressor

    # a pickled estimator rebuilds torch tensors with torch functions, which the default restricted
    # unpickler refuses: whoever registers it must say they trust the file
    monkeypatch.setenv("BERTH_PICKLE_POLICY", "trusted")

    data = load_iris()
    x = (data.data - data.data.mean(axis=0)) / data.data.std(axis=0)
    y = np.asarray(data.target_names)[data.target]
    model = PyTorchClassifier(hidden=(16,), epochs=60, lr=0.02).fit(x, y)
    assert (model.predict(x) == y).mean() > 0.9
    assert model.predict_proba(x[:2]).sum(axis=1) == pytest.approx([1.0, 1.0])
    joblib.dump(model, tmp_path / "torch_iris.joblib")
    register_ok(registry, str(tmp_path / "torch_iris.joblib"), "--name", "torch-iris")
    predictions, info = predict_rest(make_client, registry, "torch-iris", x[[0, 60, 120]].tolist())
    assert [p["prediction"] for p in predictions] == model.predict(x[[0, 60, 120]]).tolist()
    assert info["framework"] == "sklearn"
    assert info["classes"] == ["setosa", "versicolor", "virginica"]
    assert info["signature"]["n_features"] == 4

    regressor = PyTorchRegressor(epochs=30).fit(x[:, :3], x[:, 3])
    assert np.corrcoef(regressor.predict(x[:, :3]), x[:, 3])[0, 1] > 0.9
