"""`berth routes ...`: traffic routes over versions and aliases, stored with the registry."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import click
from pydantic import ValidationError
from rich.table import Table

from berth.cli.common import CliState, console, out, print_json, spinner
from berth.errors import InvalidInput, Unavailable
from berth.router import AutoRollback, Route, parse_weights

__all__ = ["check_loads", "routes"]


def check_loads(state: CliState, name: str, targets: list[str]) -> None:
    """Verify, load and warm up each target in-process, as a server would, before anything changes."""
    from berth.dataplane import load_version

    registry, settings = state.registry(), state.settings()
    for target in dict.fromkeys(targets):
        version = registry.resolve(name, target)
        with spinner(f"Checking that {name}@{version} ({target}) loads and answers"):
            load_version(registry, settings, name, version)


@click.group()
def routes() -> None:
    """Spread traffic over versions: canary and A/B weights, sticky keys, shadow, auto-rollback."""


@routes.command()
@click.argument("name")
@click.pass_obj
def show(state: CliState, name: str) -> None:
    """Show NAME's route and the versions its targets point at now."""
    registry = state.registry()
    raw = registry.route(name)
    if raw is None:
        console.print(f"{name} has no route: requests go to its production version")
        return
    route = Route.model_validate(raw)
    targets = [*route.weights, *([route.shadow] if route.shadow else [])]
    print_json({**raw, "resolves_to": {t: registry.resolve(name, t) for t in targets}})


@routes.command("set")
@click.argument("name")
@click.argument("weights", nargs=-1, required=True)
@click.option(
    "--sticky-field",
    default=None,
    help="Request-body field whose value keeps a user on one variant.",
)
@click.option(
    "--primary", default=None, help="The target auto-rollback protects (default: the heaviest)."
)
@click.option("--shadow", default=None, help="A version or alias that receives mirrored traffic.")
@click.option("--shadow-fraction", type=float, default=1.0, show_default=True)
@click.option(
    "--auto-rollback/--no-auto-rollback", default=False, help="Zero a canary that does worse."
)
@click.option("--max-error-rate-delta", type=float, default=0.05, show_default=True)
@click.option("--max-p99-ratio", type=float, default=2.0, show_default=True)
@click.option("--min-requests", type=int, default=50, show_default=True)
@click.option("--window", "window_s", type=float, default=60.0, show_default=True, help="Seconds.")
@click.option("--no-check", is_flag=True, help="Skip loading each target before storing the route.")
@click.pass_obj
def set_route(
    state: CliState,
    name: str,
    weights: tuple[str, ...],
    sticky_field: str | None,
    primary: str | None,
    shadow: str | None,
    shadow_fraction: float,
    auto_rollback: bool,
    max_error_rate_delta: float,
    max_p99_ratio: float,
    min_requests: int,
    window_s: float,
    no_check: bool,
) -> None:
    """Route NAME's traffic by WEIGHTS, e.g. `production=90 canary=10` (targets: versions or aliases)."""
    try:
        route = Route(
            weights=parse_weights(weights),
            primary=primary,
            sticky_field=sticky_field,
            shadow=shadow,
            shadow_fraction=shadow_fraction,
            auto_rollback=AutoRollback(
                window_s=window_s,
                min_requests=min_requests,
                max_error_rate_delta=max_error_rate_delta,
                max_p99_ratio=max_p99_ratio,
            )
            if auto_rollback
            else None,
        )
    except ValidationError as exc:
        raise InvalidInput(f"invalid route: {exc.errors()[0]['msg']}") from None
    registry = state.registry()
    targets = [*route.weights, *([route.shadow] if route.shadow else [])]
    if not no_check:
        check_loads(state, name, targets)
    registry.set_route(name, route.model_dump(mode="json", exclude_none=True))
    resolved = ", ".join(f"{t}→{registry.resolve(name, t)}" for t in targets)
    console.print(
        f"[green]✓[/] {name}: route {route.describe()} ({resolved}); servers apply it "
        "within BERTH_REFRESH_INTERVAL_S"
    )


@routes.command()
@click.argument("name")
@click.pass_obj
def clear(state: CliState, name: str) -> None:
    """Remove NAME's route: all traffic goes to its production version again."""
    state.registry().set_route(name, None)
    console.print(f"[green]✓[/] {name}: route cleared")


@routes.command()
@click.argument("name")
@click.option(
    "--url", default="http://127.0.0.1:8000", show_default=True, help="A running Berth server."
)
@click.option("--json", "as_json", is_flag=True, help="Print the raw report.")
def report(name: str, url: str, as_json: bool) -> None:
    """Per-variant evidence of NAME's experiment, from a running server."""
    try:
        with urllib.request.urlopen(
            f"{url.rstrip('/')}/models/{name}/experiment", timeout=10
        ) as reply:
            data: dict[str, Any] = json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        raise InvalidInput(json.loads(exc.read() or b"{}").get("error", str(exc))) from None
    except urllib.error.URLError as exc:
        raise Unavailable(f"cannot reach {url}: {exc.reason}") from None
    if as_json:
        print_json(data)
        return
    variants: dict[str, dict[str, Any]] = data["variants"]
    shadow = any("shadow" in v for v in variants.values())
    feedback = any("feedback" in v for v in variants.values())
    columns = ["variant", "requests", "errors", "p50 ms", "p99 ms", "predictions"]
    table = Table(
        *columns, *(["shadow agrees"] if shadow else []), *(["feedback"] if feedback else [])
    )
    for variant, stats in variants.items():
        predicted = stats.get("label_distribution") or stats.get("mean_prediction")
        if isinstance(predicted, dict):
            predicted = ", ".join(f"{k} {v:.0%}" for k, v in predicted.items())
        row = [
            variant,
            str(stats["requests"]),
            f"{stats['error_rate']:.1%}",
            f"{stats['latency_p50_ms']:.1f}",
            f"{stats['latency_p99_ms']:.1f}",
            "" if predicted is None else str(predicted),
        ]
        if shadow:
            agreement = stats.get("shadow", {}).get("agreement")
            row.append("" if agreement is None else f"{agreement:.1%}")
        if feedback:
            row.append(", ".join(f"{k}={v:.3g}" for k, v in stats.get("feedback", {}).items()))
        table.add_row(*row)
    console.print(f"{name}: route {data.get('route') or '(none)'}")
    out.print(table)
    comparison = data.get("comparison")
    if comparison:
        a, b = comparison["variants"]
        console.print(
            f"{comparison['test']}: {a} vs {b}: z={comparison['z']:.2f}, p={comparison['p_value']:.3g}"
            + (" (significant at 0.05)" if comparison["significant_at_0.05"] else "")
        )
        if "caveat" in comparison:
            console.print(f"[yellow]caveat:[/] {comparison['caveat']}")
