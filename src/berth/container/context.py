"""The build context of an image: Berth's source, a subset of the registry and a wheel-house."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from berth.errors import ImageBuildError
from berth.registry import Registry, parse_ref
from berth.runtimes import RUNTIMES
from berth.types import ModelCard

__all__ = [
    "Target",
    "copy_models",
    "copy_source",
    "extras_for",
    "library_pins",
    "source_root",
    "wheel_house_command",
]

# What the Dockerfile reads from the context, relative to Berth's source root.
SOURCE_FILES = ("Dockerfile", "pyproject.toml", "README.md", "deploy/docker/warm_bytecode.py")
OLDEST_GLIBC_MINOR = 5  # manylinux1


@dataclass(frozen=True)
class Target:
    """The Python and platform of a base image, as pip's download options need them."""

    python: str  # "3.11"
    machine: str  # "x86_64"
    glibc: str  # "2.36"

    def pip_options(self) -> list[str]:
        """`pip download` options that select wheels for this Python and every older manylinux."""
        major, minor = self.glibc.split(".")[:2]
        platforms = [
            f"manylinux_{major}_{m}_{self.machine}"
            for m in range(int(minor), OLDEST_GLIBC_MINOR - 1, -1)
        ]
        platforms += [f"manylinux{tag}_{self.machine}" for tag in ("2014", "2010", "1")]
        abi = "cp" + self.python.replace(".", "")
        options = ["--python-version", self.python, "--implementation", "cp", "--abi", abi]
        for platform in platforms:
            options += ["--platform", platform]
        return options


def source_root() -> Path:
    """Berth's source checkout (the folder with its pyproject.toml and Dockerfile)."""
    root = Path(__file__).resolve().parents[3]
    pyproject = root / "pyproject.toml"
    if (
        pyproject.is_file()
        and 'name = "berth"' in pyproject.read_text()
        and (root / "Dockerfile").is_file()
    ):
        return root
    raise ImageBuildError(
        "berth build needs Berth's source checkout (its Dockerfile and pyproject.toml); "
        "install Berth from one: git clone ... && pip install -e '.[sklearn]'"
    )


def copy_source(root: Path, context: Path) -> None:
    """Copy what the Dockerfile installs Berth from into the context."""
    for name in SOURCE_FILES:
        if (root / name).is_file():
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, context / name)
    shutil.copytree(
        root / "src", context / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )


def copy_models(
    registry: Registry, refs: list[str], serve_alias: str, dest: Path
) -> list[ModelCard]:
    """Copy the versions that `refs` serve (default: every model with `serve_alias`) into `dest`.

    Aliases that point at a copied version are kept, so a model named without a version still
    follows its alias inside the image.
    """
    if not refs:
        refs = [name for name in registry.models() if serve_alias in registry.aliases(name)]
        if not refs:
            raise ImageBuildError(
                f"no model to put in the image: name some, or give one the {serve_alias!r} alias"
            )
    cards: list[ModelCard] = []
    for ref in refs:
        name, version = parse_ref(ref)
        if version is None and serve_alias in registry.aliases(name):
            version = serve_alias
        card = registry.card(name, version)
        registry.verify(card)
        shutil.copytree(registry.path(name, card.version), dest / name / str(card.version))
        cards.append(card)
    copy = Registry(dest)
    for card in cards:
        for alias, number in registry.aliases(card.name).items():
            if number in copy.versions(card.name):
                copy.set_alias(card.name, alias, number)
    return cards


def extras_for(cards: list[ModelCard], more: list[str]) -> list[str]:
    """The extras that install the runtimes of `cards`, plus `more`."""
    extras = {RUNTIMES[card.framework][2] for card in cards if card.framework in RUNTIMES}
    return sorted(extras | {e for e in more if e})


def library_pins(cards: list[ModelCard]) -> list[str]:
    """`package==version` for each library every model recorded at the same version.

    The image then runs the versions the models were saved with. A library recorded at different
    versions by different models is left unpinned (the runtime warns about the mismatch).
    """
    seen: dict[str, set[str]] = {}
    for card in cards:
        for package, version in card.libraries.items():
            public = version.split("+")[0]  # 2.3.0+cpu: local labels are not on PyPI
            if package != "python" and public:
                seen.setdefault(package, set()).add(public)
    return sorted(f"{p}=={next(iter(v))}" for p, v in seen.items() if len(v) == 1)


def wheel_house_command(
    root: Path, extras: list[str], target: Target, pins: list[str], dest: Path
) -> list[str]:
    """The `pip download` that fills `dest` with every wheel the image installs, for `target`."""
    project = f"{root}[{','.join(extras)}]" if extras else str(root)
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        *target.pip_options(),
        "--dest",
        str(dest),
        project,
        "setuptools>=68",  # Berth's build backend, for the build stage's offline install
        *pins,
    ]


def download_wheels(command: list[str]) -> None:
    """Run the wheel-house download; a failure names the package pip could not find."""
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
        raise ImageBuildError(
            "pip download for the wheel-house failed: " + (" ".join(errors) or result.stderr[-500:])
        )
