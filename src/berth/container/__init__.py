"""Container images that serve chosen models: `berth build NAME... --tag TAG`."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from berth.container.context import (
    copy_models,
    copy_source,
    download_wheels,
    extras_for,
    library_pins,
    source_root,
    wheel_house_command,
)
from berth.container.engine import Docker, run_line
from berth.registry import Registry

__all__ = ["BuiltImage", "ImageRequest", "build_image"]

DEFAULT_BASE_IMAGE = "python:3.11-slim"


@dataclass(frozen=True)
class ImageRequest:
    """What to build: which models, under which tag, on which base, with which extras."""

    refs: list[str]
    tag: str
    base_image: str = DEFAULT_BASE_IMAGE
    extras: tuple[str, ...] = ()
    offline: bool = True
    pin_libraries: bool = True
    serve_alias: str = "production"


@dataclass(frozen=True)
class BuiltImage:
    """The outcome of a build."""

    tag: str
    size_bytes: int
    seconds: float
    models: list[str]
    extras: list[str]
    log: str

    @property
    def run_line(self) -> str:
        return run_line(self.tag)


def build_image(
    registry: Registry,
    request: ImageRequest,
    *,
    docker: Docker | None = None,
    step: Callable[[str], None] = lambda _: None,
) -> BuiltImage:
    """Assemble a build context (source, registry subset, wheel-house) and `docker build` it.

    Offline (the default), pip downloads every wheel here, for the base image's Python and
    platform, and the build itself runs without network.
    """
    docker = docker or Docker()
    root = source_root()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="berth-image-") as tmp:
        context = Path(tmp)
        copy_source(root, context)
        step("copying the models")
        cards = copy_models(registry, request.refs, request.serve_alias, context / "models")
        extras = extras_for(cards, list(request.extras))
        (context / "wheels").mkdir()
        if request.offline:
            step(f"inspecting {request.base_image}")
            target = docker.probe(request.base_image)
            step(f"downloading wheels for Python {target.python} on {target.machine}")
            pins = library_pins(cards) if request.pin_libraries else []
            download_wheels(wheel_house_command(root, extras, target, pins, context / "wheels"))
        step(f"building {request.tag}")
        log = context.parent / f"{context.name}.log"
        build_args = {
            "BASE_IMAGE": request.base_image,
            "EXTRAS": ",".join(extras),
            "MODELS": "models",
            "WHEELS": "wheels",
            "SERVE_MODELS": ",".join(request.refs),
        }
        try:
            docker.build(context, request.tag, build_args, offline=request.offline, log=log)
        finally:
            text = log.read_text(errors="replace") if log.exists() else ""
            log.unlink(missing_ok=True)
    return BuiltImage(
        tag=request.tag,
        size_bytes=docker.size(request.tag),
        seconds=time.monotonic() - started,
        models=[card.ref for card in cards],
        extras=extras,
        log=text,
    )
