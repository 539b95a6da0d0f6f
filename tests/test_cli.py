"""Every `berth` command, run in-process through click's runner."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import joblib
import pytest
from click.testing import CliRunner, Result
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

from berth.cli.main import cli
from berth.registry import Registry
from berth.settings import Settings


def berth(registry: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--registry", str(registry), *args], catch_exceptions=False)


@pytest.fixture
def ridge_files(tmp_path: Path) -> tuple[Path, Path]:
    """A Ridge model fitted on numpy arrays, and a reference CSV with named columns."""
    data = load_diabetes()
    model_path = tmp_path / "ridge.joblib"
    joblib.dump(Ridge().fit(data.data, data.target), model_path)
    csv_path = tmp_path / "reference.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*data.feature_names, "target"])
        writer.writerows(
            [[*row, y] for row, y in zip(data.data[:100], data.target[:100], strict=True)]
        )
    return model_path, csv_path


def test_examples_train_registers_production(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    result = berth(root, "examples", "train", "intent")
    assert result.exit_code == 0, result.output
    assert "registered intent@1 as production" in result.output
    card = Registry(root).card("intent", "production")
    assert card.metrics["accuracy"] > 0.9
    assert card.reference is not None
    assert card.reference["predictions"]["class_fractions"]
    again = berth(root, "examples", "train", "intent", "--if-missing")
    assert "already registered" in again.output
    assert Registry(root).versions("intent") == [1]


def test_register_with_reference_and_feature_names(
    tmp_path: Path, ridge_files: tuple[Path, Path]
) -> None:
    model_path, csv_path = ridge_files
    root = tmp_path / "registry"
    names = "age,sex,bmi,bp,s1,s2,s3,s4,s5,s6"
    result = berth(
        root,
        "models",
        "register",
        str(model_path),
        "--name",
        "ridge",
        "--alias",
        "staging",
        "--reference",
        str(csv_path),
        "--feature-names",
        names,
        "--description",
        "a ridge",
    )
    assert result.exit_code == 0, result.output
    assert "registered ridge@1 (regression, 10 numeric features named age" in result.output
    card = Registry(root).card("ridge", "staging")
    assert card.description == "a ridge"
    assert card.reference is not None
    assert card.reference["rows"] == 100
    assert set(card.reference["features"]) == set(names.split(","))
    assert card.input_example["features"]["age"] == pytest.approx(0.038076, abs=1e-6)
    assert len(card.files["ridge.joblib"]) == 64


def test_register_refuses_a_reference_that_does_not_fit(
    tmp_path: Path, ridge_files: tuple[Path, Path]
) -> None:
    model_path, csv_path = ridge_files
    result = berth(
        tmp_path / "r",
        "models",
        "register",
        str(model_path),
        "--name",
        "ridge",
        "--reference",
        str(csv_path),
    )
    assert result.exit_code == 1
    assert "has 11 columns but the model takes 10 unnamed features" in result.output
    assert Registry(tmp_path / "r").models() == []


def test_list_show_promote_rollback_delete(tmp_path: Path, ridge_files: tuple[Path, Path]) -> None:
    model_path, _ = ridge_files
    root = tmp_path / "registry"
    for _ in range(3):
        assert berth(root, "models", "register", str(model_path), "--name", "ridge").exit_code == 0
    assert (
        berth(root, "models", "promote", "ridge", "1")
        .output.strip()
        .endswith("ridge: production (none) → 1")
    )
    assert "production 1 → 3" in berth(root, "models", "promote", "ridge", "3").output
    listing = berth(root, "models", "list").output
    assert "ridge" in listing
    assert "1, 2, 3" in listing
    assert "production→3" in listing
    shown = json.loads(berth(root, "models", "show", "ridge@production").output)
    assert shown["version"] == 3
    assert shown["aliases"] == ["production"]
    assert shown["task"] == "regression"
    assert "production 3 → 1" in berth(root, "models", "rollback", "ridge").output
    refused = berth(root, "models", "delete", "ridge@1")
    assert refused.exit_code == 1
    assert "still pointed at by alias production" in refused.output
    assert berth(root, "models", "delete", "ridge@2").exit_code == 0
    assert Registry(root).versions("ridge") == [1, 3]
    assert berth(root, "models", "delete", "ridge").exit_code == 1


def test_predict_in_process(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    berth(root, "examples", "train", "intent")
    one = json.loads(berth(root, "predict", "intent", '{"text": "Great service!"}').output)
    assert one["prediction"] == "praise"
    assert one["version"] == 1
    many = json.loads(
        berth(
            root,
            "predict",
            "intent@production",
            '{"instances": ["Hello!", "How do I reset my password?"]}',
        ).output
    )
    assert [p["prediction"] for p in many["predictions"]] == ["greeting", "question"]
    bad = berth(root, "predict", "intent", '{"text": ""}')
    assert bad.exit_code == 1
    assert "error: text must not be empty" in bad.output
    assert "not valid JSON" in berth(root, "predict", "intent", "{").output
    assert "model 'nope' is not registered" in berth(root, "predict", "nope", "{}").output


def test_serve_with_nothing_to_serve_says_what_to_do(tmp_path: Path) -> None:
    result = berth(tmp_path / "empty", "serve")
    assert result.exit_code == 1
    assert "no model to serve" in result.output
    assert "berth models promote" in result.output


def test_config_show_and_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BERTH_MAX_BATCH", "12")
    monkeypatch.setenv("BERTH_CORS_ORIGINS", "https://a.example, https://b.example")
    shown = json.loads(berth(tmp_path, "config", "show").output)
    assert shown["max_batch"] == 12
    assert shown["cors_origins"] == ["https://a.example", "https://b.example"]
    assert shown["registry"] == str(tmp_path)  # the flag wins over the environment
    reference = CliRunner().invoke(cli, ["config", "reference"]).output
    for name in Settings.model_fields:
        assert f"`BERTH_{name.upper()}`" in reference


def test_configuration_docs_are_current() -> None:
    from berth.settings import settings_reference

    docs = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    assert settings_reference() in docs, "regenerate with: make docs-config"


def test_precedence_flag_over_environment_over_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("BERTH_PORT=9100\nBERTH_MAX_BATCH=7\nBERTH_LOG_FORMAT=text\n")
    monkeypatch.setenv("BERTH_MAX_BATCH", "8")
    settings = Settings(port=9200)
    assert settings.port == 9200  # flag (init argument) beats the .env file
    assert settings.max_batch == 8  # environment beats the .env file
    assert settings.log_format == "text"  # .env beats the default
