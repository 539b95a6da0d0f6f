"""The drift report: prediction-log records against the reference, as one self-contained HTML page.

Plots are inline SVG (reference and live fractions per bin, side by side): no plotting library,
no script, nothing fetched when the page opens.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from berth.monitoring.drift import PSI_ALERT, compare, input_columns
from berth.runtimes.base import Vocabulary
from berth.types import ModelCard

__all__ = ["drift_from_records", "render_report"]

REF_COLOR, LIVE_COLOR = "#8c959f", "#0969da"


def drift_from_records(
    card: ModelCard, records: Sequence[dict[str, Any]], vocabulary: Vocabulary | None = None
) -> dict[str, Any]:
    """PSI and KS of stored records (those with inputs) against the version's reference
    (`vocabulary`: a text model's, for the out-of-vocabulary rate; without it that is left out)."""
    if not card.reference:
        return {"status": "no reference statistics", "window_rows": 0, "features": {}}
    batches: list[Any] = []
    predictions: list[Any] = []
    for record in records:
        inputs, outputs = record.get("inputs"), record.get("outputs")
        if record.get("outcome") != "ok" or not inputs or not outputs:
            continue
        if card.signature.kind == "text":
            batches.append(input_columns(list(inputs), vocabulary))
        else:
            batches.append(np.asarray(inputs, dtype=np.float64).reshape(len(inputs), -1))
        predictions.extend(outputs.get("predictions", []))
    if not batches:
        return {
            "status": "no stored inputs (is 'inputs' in prediction_log_fields?)",
            "window_rows": 0,
            "features": {},
        }
    inputs_matrix = np.vstack(batches)
    report = compare(card.reference, inputs_matrix, predictions)
    return {"status": "ok", "window_rows": int(inputs_matrix.shape[0]), **report}


def _bars(reference: Sequence[float], live: Sequence[float], labels: Sequence[str]) -> str:
    width, height, pad = 560, 180, 28
    n = max(len(reference), 1)
    slot = (width - 2 * pad) / n
    top = max([*reference, *live, 1e-9])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 40}" '
        f'viewBox="0 0 {width} {height + 40}" role="img">',
        f'<line x1="{pad}" y1="{height}" x2="{width - pad}" y2="{height}" stroke="#d0d7de"/>',
    ]
    for i, (ref, now) in enumerate(zip(reference, live, strict=True)):
        x = pad + i * slot
        for j, (value, color) in enumerate(((ref, REF_COLOR), (now, LIVE_COLOR))):
            h = (height - 10) * value / top
            parts.append(
                f'<rect x="{x + 2 + j * (slot - 4) / 2:.1f}" y="{height - h:.1f}" '
                f'width="{max((slot - 4) / 2, 1):.1f}" height="{h:.1f}" fill="{color}">'
                f"<title>{html.escape(labels[i])}: {'reference' if j == 0 else 'live'} "
                f"{value:.3f}</title></rect>"
            )
        if n <= 12 or i % max(n // 12, 1) == 0:
            parts.append(
                f'<text x="{x + slot / 2:.1f}" y="{height + 14}" font-size="10" '
                f'text-anchor="middle" fill="#57606a">{html.escape(labels[i][:14])}</text>'
            )
    parts.append(
        f'<rect x="{pad}" y="{height + 24}" width="10" height="10" fill="{REF_COLOR}"/>'
        f'<text x="{pad + 14}" y="{height + 33}" font-size="11">reference</text>'
        f'<rect x="{pad + 90}" y="{height + 24}" width="10" height="10" fill="{LIVE_COLOR}"/>'
        f'<text x="{pad + 104}" y="{height + 33}" font-size="11">live</text></svg>'
    )
    return "".join(parts)


def _bin_labels(edges: Sequence[float]) -> list[str]:
    return [f"{edges[i]:.3g}-{edges[i + 1]:.3g}" for i in range(len(edges) - 1)]


def _section(name: str, scores: dict[str, Any]) -> str:
    if "bin_edges" in scores:
        labels = _bin_labels(scores["bin_edges"])
    else:
        labels = [str(c) for c in scores["classes"]]
    alert = scores["psi"] > PSI_ALERT
    ks = "-" if scores.get("ks") is None else f"{scores['ks']:.3f}"
    ref_mean, live_mean = scores.get("reference_mean"), scores.get("live_mean")
    means = ""
    if ref_mean is not None and live_mean is not None:
        means = f" · mean {ref_mean:.3g} (reference) → {live_mean:.3g} (live)"
    return (
        f'<section class="{"alert" if alert else ""}" id="feature-{html.escape(name)}">'
        f"<h2>{html.escape(name)}</h2>"
        f'<p>PSI <b class="psi">{scores["psi"]:.3f}</b> · KS {ks}{means}'
        + (" · <b>drifted</b>" if alert else "")
        + "</p>"
        + _bars(scores["reference"], scores["live"], labels)
        + "</section>"
    )


def render_report(card: ModelCard, drift: dict[str, Any], since: datetime | None) -> str:
    """The whole HTML page."""
    title = f"Drift report: {card.ref}"
    features = drift.get("features", {})
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v['psi']:.3f}</td>"
        f"<td>{'-' if v.get('ks') is None else format(v['ks'], '.3f')}</td>"
        f"<td>{'drifted' if v['psi'] > PSI_ALERT else 'ok'}</td></tr>"
        for k, v in features.items()
    )
    prediction = drift.get("prediction")
    if prediction:
        rows += (
            f"<tr><td><i>prediction</i></td><td>{prediction['psi']:.3f}</td>"
            f"<td>{'-' if prediction.get('ks') is None else format(prediction['ks'], '.3f')}</td>"
            f"<td>{'drifted' if prediction['psi'] > PSI_ALERT else 'ok'}</td></tr>"
        )
    sections = "".join(_section(name, scores) for name, scores in features.items())
    if prediction:
        sections += _section("prediction", prediction)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    window = f"since {since:%Y-%m-%d %H:%M} UTC" if since else "all stored records"
    max_psi = drift.get("max_psi")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 2rem; color: #1f2328; max-width: 980px; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
td, th {{ padding: .2rem .7rem; border-bottom: 1px solid #eaeef2; text-align: left; }}
section {{ border: 1px solid #d0d7de; border-radius: 8px; padding: .3rem 1rem; margin: 1rem 0; }}
section.alert {{ border-color: #cf222e; }}
h2 {{ font-size: 1.05rem; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Generated {generated} from the prediction log ({html.escape(window)}):
<b>{drift.get("window_rows", 0)}</b> rows compared with the reference statistics recorded at
registration ({(card.reference or {}).get("rows", 0)} rows). Status: {html.escape(str(drift.get("status")))}.
Largest PSI: <b>{"-" if max_psi is None else f"{max_psi:.3f}"}</b> (alert above {PSI_ALERT}).</p>
<table><tr><th>column</th><th>PSI</th><th>KS</th><th></th></tr>{rows}</table>
{sections}
<p style="color:#57606a">PSI: population stability index over the reference's quantile bins
(values outside the reference range count in the outer bins). KS: the largest gap between the
cumulative distributions at the bin edges. Below 0.1: stable; 0.1-0.2: watch; above 0.2: drifted.</p>
</body></html>
"""
