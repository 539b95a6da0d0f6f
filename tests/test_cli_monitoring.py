"""`berth predictions tail|export` and `berth drift report` on a prediction log a server wrote."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import orjson
import pytest
from click.testing import CliRunner

from berth.cli.main import cli
from berth.registry import Registry
from tests.conftest import ClientFactory


@pytest.fixture
def logged(examples_registry: Registry, make_client: ClientFactory) -> Registry:
    """A registry whose default state folder holds 30 regression predictions, 20 of them shifted."""
    card = examples_registry.card("regression")
    example = np.asarray(card.input_example["features"], dtype=np.float64)
    rng = np.random.default_rng(3)
    with make_client(examples_registry) as client:
        for i in range(30):
            row = example + rng.normal(0, 0.01, size=example.size) + (0.3 if i >= 10 else 0.0)
            response = client.post("/models/regression/predict", json={"features": row.tolist()})
            assert response.status_code == 200
        client.post("/models/intent/predict", json={"text": "hello"})
    return examples_registry


def _run(registry: Registry, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--registry", str(registry.root), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_export_in_three_formats(logged: Registry, tmp_path: Path) -> None:
    lines = _run(logged, "predictions", "export", "regression").splitlines()
    records = [orjson.loads(line) for line in lines]
    assert len(records) == 30
    assert all(r["model"] == "regression" and r["outcome"] == "ok" for r in records)
    assert records[0]["ts"] <= records[-1]["ts"]
    out = tmp_path / "p.csv"
    _run(logged, "predictions", "export", "regression", "--format", "csv", "-o", str(out))
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 30
    assert len(orjson.loads(rows[0]["inputs"])[0]) == 10
    parquet = tmp_path / "p.parquet"
    _run(logged, "predictions", "export", "regression", "--format", "parquet", "-o", str(parquet))
    import pyarrow.parquet as pq

    table = pq.read_table(parquet)
    assert table.num_rows == 30
    assert str(table.schema.field("ts").type) == "timestamp[us, tz=UTC]"
    future = _run(logged, "predictions", "export", "regression", "--since", "2999-01-01")
    assert future == ""


def test_tail_shows_the_latest(logged: Registry) -> None:
    lines = _run(logged, "predictions", "tail", "regression", "-n", "3").splitlines()
    assert len(lines) == 3
    everything = _run(logged, "predictions", "export", "regression").splitlines()
    assert lines == everything[-3:]
    assert _run(logged, "predictions", "tail", "intent", "--since", "1h").count("\n") == 1


def test_drift_report_html(logged: Registry, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    output = _run(logged, "drift", "report", "regression", "-o", str(out))
    assert "30 logged rows" in output
    page = out.read_text()
    assert page.startswith("<!doctype html>")
    assert page.count("<svg") == 11  # ten features and the prediction
    assert "drifted" in page
    assert "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )


def test_drift_report_html_shows_the_oov_rate_of_text(
    examples_registry: Registry, make_client: ClientFactory, tmp_path: Path
) -> None:
    with make_client(examples_registry) as client:
        for i in range(20):
            text = f"zorgle blampf quintessa number{i} frobnicated"
            assert client.post("/models/intent/predict", json={"text": text}).status_code == 200
    out = tmp_path / "intent.html"
    output = _run(examples_registry, "drift", "report", "intent", "-o", str(out))
    assert "20 logged rows" in output
    page = out.read_text()
    section = page[page.index('id="feature-text_oov_rate"') :]
    section = section[: section.index("</section>")]
    assert "drifted" in section
    assert "mean 0 (reference) → 1 (live)" in section


def test_bad_since_is_a_clear_error(logged: Registry) -> None:
    result = CliRunner().invoke(
        cli, ["--registry", str(logged.root), "predictions", "export", "regression", "--since", "x"]
    )
    assert result.exit_code == 1
    assert "since: expected a duration" in result.output


def test_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--registry", str(tmp_path / "registry"), "predictions", "tail", "anything"]
    )
    assert result.exit_code == 1
    message = " ".join(result.output.split())  # rich wraps long lines
    assert "cannot read the prediction store at sqlite:///" in message
    assert "unable to open database file" in message
