"""The docker client, run as a program: probe a base image, build an image, measure it."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from berth.container.context import Target
from berth.errors import ImageBuildError

__all__ = ["Docker", "run_line"]

PROBE = (
    "import platform, sys; "
    "print('%d.%d' % sys.version_info[:2], platform.machine(), platform.libc_ver()[1] or '-')"
)


@dataclass(frozen=True)
class Docker:
    """Runs `binary` (the docker client) and turns its failures into ImageBuildError."""

    binary: str = "docker"

    def _run(self, args: list[str], *, log: Path | None = None) -> str:
        if shutil.which(self.binary) is None:
            raise ImageBuildError(
                f"{self.binary!r} not found: install Docker (https://docs.docker.com/get-docker/)"
            )
        if log is None:
            captured = subprocess.run(
                [self.binary, *args], capture_output=True, text=True, check=False
            )
            returncode, output = captured.returncode, captured.stdout
            failure = captured.stderr.strip() or captured.stdout.strip()
        else:
            # BuildKit (no `# syntax=` line, so no frontend image to pull); Docker 23+ uses it anyway.
            env = {"DOCKER_BUILDKIT": "1", **os.environ}
            with log.open("w") as handle:
                returncode = subprocess.run(
                    [self.binary, *args],
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    env=env,
                    check=False,
                ).returncode
            output = ""
            failure = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        if returncode != 0:
            raise ImageBuildError(f"docker {args[0]} failed:\n{failure}")
        return output

    def probe(self, image: str) -> Target:
        """The Python version, machine and glibc of `image` (pulled if not present)."""
        out = self._run(
            ["run", "--rm", "--network", "none", "--entrypoint", "python3", image, "-c", PROBE]
        )
        python, machine, glibc = out.split()
        if glibc == "-":
            raise ImageBuildError(
                f"{image} has no glibc (Alpine?): wheels need a glibc base such as python:3.11-slim"
            )
        return Target(python, machine, glibc)

    def build(
        self,
        context: Path,
        tag: str,
        build_args: dict[str, str],
        *,
        offline: bool,
        log: Path,
    ) -> None:
        """`docker build` the context; offline builds get no network at all."""
        args = ["build", "--tag", tag]
        for key, value in build_args.items():
            args += ["--build-arg", f"{key}={value}"]
        if offline:
            args += ["--network", "none"]
        self._run([*args, str(context)], log=log)

    def size(self, tag: str) -> int:
        """The image's size in bytes, as `docker images` reports it."""
        return int(self._run(["image", "inspect", "--format", "{{.Size}}", tag]).strip())


def run_line(tag: str, port: int = 8000) -> str:
    """The `docker run` command that serves the image on localhost:`port`."""
    return f"docker run --rm -p {port}:8000 {tag}"
