"""`berth build`: a Docker image that serves chosen models."""

from __future__ import annotations

import click

from berth.cli.common import CliState, console, out

__all__ = ["build"]


@click.command()
@click.argument("names", nargs=-1)
@click.option("--tag", "-t", required=True, help="Image name and tag, e.g. berth-intent:1.")
@click.option(
    "--base-image",
    default="python:3.11-slim",
    show_default=True,
    help="Base of both stages: a Debian-like image with python3 (and python3-venv).",
)
@click.option(
    "--extra",
    "extras",
    multiple=True,
    help="Another extra of Berth to install (repeatable); the models' own are added anyway.",
)
@click.option(
    "--online",
    is_flag=True,
    help="Let pip inside the build use its index, instead of a wheel-house made here and a "
    "build without network.",
)
@click.option(
    "--no-pin",
    is_flag=True,
    help="Do not pin the libraries the models were saved with (scikit-learn, numpy, ...).",
)
@click.option(
    "--docker", "docker_binary", default="docker", show_default=True, help="Docker client."
)
@click.pass_obj
def build(
    state: CliState,
    /,
    names: tuple[str, ...],
    tag: str,
    base_image: str,
    extras: tuple[str, ...],
    online: bool,
    no_pin: bool,
    docker_binary: str,
) -> None:
    """Build image TAG serving NAMES (NAME, NAME@VERSION or NAME@ALIAS; default: every model with
    a production alias). The models are copied into the image at /models."""
    from berth.container import ImageRequest, build_image
    from berth.container.engine import Docker

    settings = state.settings()
    request = ImageRequest(
        refs=list(names),
        tag=tag,
        base_image=base_image,
        extras=extras,
        offline=not online,
        pin_libraries=not no_pin,
        serve_alias=settings.serve_alias,
    )
    with console.status("preparing") as status:
        image = build_image(
            state.registry(), request, docker=Docker(docker_binary), step=status.update
        )
    console.print(
        f"[green]✓[/] built [bold]{image.tag}[/] ({image.size_bytes / 1e6:.0f} MB) "
        f"in {image.seconds:.0f} s: {', '.join(image.models)} (extras: {', '.join(image.extras)})"
    )
    console.print("run it:")
    out.print(f"  {image.run_line}", highlight=False, soft_wrap=True)
