"""A custom model: the user's subclass of berth's Model, registered from a file or a folder."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from berth.registry import Registry
from tests.conftest import ClientFactory
from tests.formats import berth, flat, register_ok
from tests.servers import berth_server

KEYWORDS = '''
import json

from berth.runtimes import Model
from berth.types import ModelCard, Outputs, Signature


class Keywords(Model):
    """Positive when a text has one of the words in keywords.json."""

    @classmethod
    def inspect(cls, path, settings, feature_names=None, hints=None):
        return ModelCard(
            framework="custom", format="python", artifact="keywords.json",
            task="classification", signature=Signature(kind="text"), classes=LABELS,
        )

    def load(self):
        self.words = json.loads((self.directory / "keywords.json").read_text())

    def predict(self, batch):
        hit = [any(w in text.lower() for w in self.words) for text in batch]
        return Outputs(labels=[LABELS[int(h)] for h in hit])
'''


def write_model(folder: Path, labels: list[str], words: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "keywords.py").write_text(f"LABELS = {labels!r}\n" + KEYWORDS)
    (folder / "keywords.json").write_text(json.dumps(words))
    return folder


def test_custom_model_folder_two_versions_side_by_side(
    tmp_path: Path, registry: Registry, make_client: ClientFactory
) -> None:
    v1 = write_model(tmp_path / "v1", ["negative", "positive"], ["good", "great"])
    v2 = write_model(tmp_path / "v2", ["NEG", "POS"], ["fine"])
    register_ok(registry, str(v1), "--name", "kw", "--class", "keywords:Keywords")
    register_ok(registry, str(v2), "--name", "kw", "--class", "keywords:Keywords")
    assert sorted(registry.card("kw", 1).files) == ["keywords.json", "keywords.py"]
    with make_client(registry, models=["kw"]) as client:
        one = client.post("/models/kw/versions/1/predict", json={"text": "A great day"}).json()
        two = client.post("/models/kw/versions/2/predict", json={"text": "A great day"}).json()
        fine = client.post("/models/kw/versions/2/predict", json={"text": "fine"}).json()
        info = client.get("/models/kw/versions/1").json()
    # the same module name in two versions: each version runs its own code
    assert (one["prediction"], two["prediction"], fine["prediction"]) == ("positive", "NEG", "POS")
    assert info["framework"] == "custom"
    assert info["options"] == {"class": "keywords:Keywords"}
    assert info["classes"] == ["negative", "positive"]


def test_custom_model_file_served_by_a_real_server(tmp_path: Path, registry: Registry) -> None:
    folder = write_model(tmp_path / "m", ["no", "yes"], ["berth"])
    register_ok(
        registry,
        str(folder),
        "--name",
        "kw",
        "--class",
        "keywords:Keywords",
        "--alias",
        "production",
    )
    with berth_server(registry.root, "kw") as server:
        response = httpx.post(f"{server.url}/predict", json={"text": "Berth serves it"})
    assert response.status_code == 200, response.text
    assert response.json()["prediction"] == "yes"


def test_custom_model_errors(tmp_path: Path, registry: Registry) -> None:
    folder = write_model(tmp_path / "m", ["no", "yes"], ["x"])
    no_class = berth(registry, "models", "register", str(folder), "--name", "kw")
    assert "a custom model needs --class module:Class" in flat(no_class)
    (folder / "other.py").write_text("class NotAModel:\n    pass\n")
    wrong = berth(
        registry, "models", "register", str(folder), "--name", "kw", "--class", "other:NotAModel"
    )
    assert "other:NotAModel is not a subclass of berth.runtimes.Model" in flat(wrong)
    file_only = berth(
        registry,
        "models",
        "register",
        str(folder / "keywords.py"),
        "--name",
        "kw",
        "--class",
        "other:X",
    )
    assert "--class other:X is not in keywords.py" in flat(file_only)
    with pytest.raises(Exception, match="not registered"):
        registry.versions("kw")


def test_custom_model_folder_keeps_subfolders(
    tmp_path: Path, registry: Registry, make_client: ClientFactory
) -> None:
    folder = write_model(tmp_path / "m", ["no", "yes"], ["x"])
    (folder / "pkg").mkdir()
    (folder / "pkg" / "words.py").write_text("WORDS = []\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "junk.pyc").write_bytes(b"")
    register_ok(registry, str(folder), "--name", "kw", "--class", "keywords:Keywords")
    assert sorted(registry.card("kw").files) == ["keywords.json", "keywords.py", "pkg/words.py"]
    with make_client(registry, models=["kw"]) as client:
        answer = client.post("/predict", json={"text": "x marks it"}).json()
    assert answer["prediction"] == "yes"
