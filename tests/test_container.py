"""`berth build`: the build context (registry subset, pins, wheel-house command) and the docker
calls, against a fake docker client that records what it is asked (make docker-test runs the real
one)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

import berth.container
from berth.cli.main import cli
from berth.container.context import (
    Target,
    copy_models,
    extras_for,
    library_pins,
    source_root,
    wheel_house_command,
)
from berth.errors import ChecksumMismatch, ImageBuildError
from berth.registry import Registry
from tests.fakes import register_fake

FAKE_DOCKER = """#!/usr/bin/env bash
# A docker client double: records each call, answers the probe and inspect, lists the context.
printf '%s\\n' "$*" >> "{calls}"
case "$1" in
  run) echo "3.11 x86_64 2.36" ;;
  build)
    [[ -n "{fail}" ]] && {{ echo "step 5/9: pip install failed: no matching distribution"; exit 1; }}
    context="${{@: -1}}"
    (cd "$context" && find . -type f | sort) > "{listing}"
    echo "Successfully built" ;;
  image) echo 371234567 ;;
esac
"""


def fake_docker(tmp_path: Path, *, fail: bool = False) -> tuple[Path, Path, Path]:
    calls, listing = tmp_path / "calls.txt", tmp_path / "listing.txt"
    script = tmp_path / "docker"
    script.write_text(FAKE_DOCKER.format(calls=calls, listing=listing, fail="yes" if fail else ""))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script, calls, listing


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record the wheel-house command instead of running pip (PyPI stays out of unit tests)."""
    commands: list[list[str]] = []

    def record(command: list[str]) -> None:
        commands.append(command)
        dest = Path(command[command.index("--dest") + 1])
        (dest / "numpy-2.0.0-cp311-cp311-manylinux_2_17_x86_64.whl").write_bytes(b"")

    monkeypatch.setattr(berth.container, "download_wheels", record)
    return commands


def test_copy_models_takes_only_the_served_versions_and_their_aliases(
    registry: Registry, tmp_path: Path
) -> None:
    register_fake(registry, "fake")  # version 1, production
    register_fake(registry, "fake", alias="staging")  # version 2, staging
    register_fake(registry, "other")
    dest = tmp_path / "subset"

    cards = copy_models(registry, ["fake@2"], "production", dest)

    subset = Registry(dest)
    assert [c.ref for c in cards] == ["fake@2"]
    assert subset.models() == ["fake"]
    assert subset.versions("fake") == [2]
    assert subset.aliases("fake") == {"staging": 2}
    assert (dest / "fake/2/fake.bin").read_bytes() == b"fake:sum"


def test_copy_models_defaults_to_every_production_model(registry: Registry, tmp_path: Path) -> None:
    register_fake(registry, "a")
    register_fake(registry, "a", alias=None)  # version 2, no alias: not served
    register_fake(registry, "b")
    register_fake(registry, "unserved", alias=None)

    cards = copy_models(registry, [], "production", tmp_path / "subset")

    assert [c.ref for c in cards] == ["a@1", "b@1"]
    assert Registry(tmp_path / "subset").aliases("a") == {"production": 1}


def test_copy_models_refuses_an_empty_selection(registry: Registry, tmp_path: Path) -> None:
    register_fake(registry, "a", alias=None)
    with pytest.raises(ImageBuildError, match="no model to put in the image"):
        copy_models(registry, [], "production", tmp_path / "subset")


def test_copy_models_refuses_a_tampered_version(registry: Registry, tmp_path: Path) -> None:
    register_fake(registry, "a")
    (registry.path("a", 1) / "fake.bin").write_bytes(b"tampered")
    with pytest.raises(ChecksumMismatch):
        copy_models(registry, ["a"], "production", tmp_path / "subset")


def test_pins_keep_only_versions_every_model_agrees_on(examples_registry: Registry) -> None:
    intent = examples_registry.card("intent")
    tabular = examples_registry.card("tabular")
    other = tabular.model_copy(
        update={"libraries": {**tabular.libraries, "numpy": "0.0.1", "torch": "2.3.0+cpu"}}
    )

    pins = library_pins([intent, other])

    sklearn_version = intent.libraries["scikit-learn"]
    assert f"scikit-learn=={sklearn_version}" in pins
    assert not any(p.startswith(("numpy", "python")) for p in pins)
    assert "torch==2.3.0" in pins
    assert extras_for([intent, tabular], ["grpc", ""]) == ["grpc", "sklearn"]


def test_wheel_house_command_targets_the_base_image() -> None:
    target = Target(python="3.11", machine="x86_64", glibc="2.36")
    root = source_root()

    command = wheel_house_command(root, ["sklearn"], target, ["scikit-learn==1.5.0"], Path("/w"))

    assert command[1:4] == ["-m", "pip", "download"]
    assert "--only-binary=:all:" in command
    for option, value in [("--python-version", "3.11"), ("--abi", "cp311"), ("--dest", "/w")]:
        assert command[command.index(option) + 1] == value
    platforms = [command[i + 1] for i, part in enumerate(command) if part == "--platform"]
    assert platforms[0] == "manylinux_2_36_x86_64"
    assert {"manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"} <= set(platforms)
    assert command[-3:] == [f"{root}[sklearn]", "setuptools>=68", "scikit-learn==1.5.0"]


def test_berth_build_assembles_the_context_and_builds_offline(
    examples_registry: Registry, tmp_path: Path, no_download: list[list[str]]
) -> None:
    docker, calls, listing = fake_docker(tmp_path)

    result = CliRunner().invoke(
        cli,
        ["--registry", str(examples_registry.root), "build", "intent", "tabular@1",
         "--tag", "berth-test:1", "--base-image", "local/base", "--docker", str(docker)],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert "built berth-test:1 (371 MB)" in result.output
    assert "intent@1, tabular@1 (extras: sklearn)" in result.output
    assert "docker run --rm -p 8000:8000 berth-test:1" in result.output
    probe, build, inspect = calls.read_text().splitlines()
    assert probe.startswith("run --rm --network none --entrypoint python3 local/base -c")
    assert build.startswith("build --tag berth-test:1 ")
    for arg in ["BASE_IMAGE=local/base", "EXTRAS=sklearn", "MODELS=models", "WHEELS=wheels",
                "SERVE_MODELS=intent,tabular@1", "--network none"]:  # fmt: skip
        assert arg in build
    assert inspect == "image inspect --format {{.Size}} berth-test:1"
    files = listing.read_text().splitlines()
    for path in ["./Dockerfile", "./pyproject.toml", "./src/berth/__init__.py",
                 "./deploy/docker/warm_bytecode.py", "./models/intent/1/model.json",
                 "./models/intent/aliases.json", "./models/tabular/1/model.json",
                 "./wheels/numpy-2.0.0-cp311-cp311-manylinux_2_17_x86_64.whl"]:  # fmt: skip
        assert path in files
    assert not any("regression" in f or "injection" in f or "__pycache__" in f for f in files)
    (command,) = no_download
    assert command[command.index("--python-version") + 1] == "3.11"
    assert any(part.startswith("scikit-learn==") for part in command)


def test_berth_build_online_skips_the_wheel_house_and_keeps_network(
    examples_registry: Registry, tmp_path: Path, no_download: list[list[str]]
) -> None:
    docker, calls, _ = fake_docker(tmp_path)

    result = CliRunner().invoke(
        cli,
        ["--registry", str(examples_registry.root), "build", "intent", "--tag", "b:1",
         "--online", "--docker", str(docker)],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    build = calls.read_text().splitlines()[0]
    assert build.startswith("build ") and "--network none" not in build
    assert "BASE_IMAGE=python:3.11-slim" in build
    assert no_download == []


def test_a_failed_docker_build_is_one_error_line_with_the_log_tail(
    examples_registry: Registry, tmp_path: Path, no_download: list[list[str]]
) -> None:
    docker, _, _ = fake_docker(tmp_path, fail=True)

    result = CliRunner().invoke(
        cli,
        ["--registry", str(examples_registry.root), "build", "intent", "--tag", "b:1",
         "--docker", str(docker)],
    )  # fmt: skip

    assert result.exit_code == 1
    assert "error: docker build failed" in result.output
    assert "no matching distribution" in result.output


def test_a_missing_docker_client_says_what_to_install(
    examples_registry: Registry, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        cli,
        ["--registry", str(examples_registry.root), "build", "intent", "--tag", "b:1",
         "--docker", str(tmp_path / "no-docker")],
    )  # fmt: skip

    assert result.exit_code == 1
    assert "not found: install Docker" in result.output


def test_unknown_model_is_refused_before_docker_runs(
    examples_registry: Registry, tmp_path: Path
) -> None:
    docker, calls, _ = fake_docker(tmp_path)

    result = CliRunner().invoke(
        cli,
        ["--registry", str(examples_registry.root), "build", "nope", "--tag", "b:1",
         "--docker", str(docker)],
    )  # fmt: skip

    assert result.exit_code == 1
    assert "nope" in result.output
    assert not calls.exists()


def test_the_chart_schema_is_valid_json_naming_every_value() -> None:
    """Values and schema stay in step: every top-level value is described by the schema."""
    import yaml

    chart = source_root() / "deploy/helm/berth"
    schema = json.loads((chart / "values.schema.json").read_text())
    values = yaml.safe_load((chart / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])
    assert schema["additionalProperties"] is False
