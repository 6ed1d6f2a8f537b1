"""The drift report as files: report.json, PNG plots and a self-contained index.html.

Plots are drawn on `Figure` objects with the Agg canvas (no pyplot): no display is
needed and no global figure state is shared between threads.
"""

from __future__ import annotations

import html
import itertools
import json
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from libs.drift.compare import DriftReport, FeatureDrift
from libs.drift.psi import MODERATE_THRESHOLD

_COLOURS = {"stable": "#2e7d32", "moderate": "#f9a825", "drift": "#c62828", "insufficient": "#9e9e9e"}


def write_html_report(report: DriftReport, folder: Path) -> Path:
    """Writes report.json, psi.png, one <feature>.png each and index.html; returns index.html."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report.to_dict(), indent=1))
    _psi_chart(report, folder / "psi.png")
    for feature in report.features:
        _histogram(feature, folder / f"{feature.name}.png")
    index = folder / "index.html"
    index.write_text(_page(report))
    return index


def _psi_chart(report: DriftReport, path: Path) -> None:
    figure = Figure(figsize=(7, 3.5))
    axes = figure.add_subplot()
    names = [f.name for f in report.features]
    values = [0.0 if f.psi is None else f.psi for f in report.features]
    axes.barh(names, values, color=[_COLOURS[f.band.label] for f in report.features])
    axes.axvline(MODERATE_THRESHOLD, color=_COLOURS["moderate"], linestyle=":", label="moderate")
    axes.axvline(report.threshold, color=_COLOURS["drift"], linestyle="--", label="drift threshold")
    axes.set_xlabel("PSI")
    axes.invert_yaxis()
    axes.legend(loc="lower right")
    figure.tight_layout()
    FigureCanvasAgg(figure).print_png(str(path))


def _histogram(feature: FeatureDrift, path: Path) -> None:
    figure = Figure(figsize=(7, 3.5))
    axes = figure.add_subplot()
    positions = np.arange(len(feature.expected))
    axes.bar(positions - 0.2, feature.expected, width=0.4, label="expected (reference)")
    axes.bar(positions + 0.2, feature.actual, width=0.4, label="actual (production)")
    axes.set_xticks(positions, _bin_labels(feature.edges), rotation=45, ha="right", fontsize=7)
    axes.set_ylabel("share of rows")
    psi_text = "insufficient data" if feature.psi is None else f"PSI {feature.psi:.3f}"
    axes.set_title(f"{feature.name}: {psi_text} ({feature.band.label})")
    axes.legend()
    figure.tight_layout()
    FigureCanvasAgg(figure).print_png(str(path))


def _bin_labels(edges: tuple[float, ...]) -> list[str]:
    bounds = ["-inf", *(f"{edge:.3g}" for edge in edges), "inf"]
    return [f"({low}, {high}]" for low, high in itertools.pairwise(bounds)]


def _number(value: float | None) -> str:
    return "insufficient data" if value is None else f"{value:.4f}"


def _page(report: DriftReport) -> str:
    rows = "\n".join(
        f"<tr><td>{html.escape(f.name)}</td><td>{_number(f.psi)}</td>"
        f'<td style="color:{_COLOURS[f.band.label]}">{f.band.label}</td><td>{f.rows}</td></tr>'
        for f in report.features
    )
    plots = "\n".join(
        f'<h3>{html.escape(f.name)}</h3><img src="{html.escape(f.name)}.png" alt="{html.escape(f.name)}">'
        for f in report.features
    )
    prediction = (
        ""
        if report.prediction is None
        else f"<p>Prediction drift (predicted labels): PSI {_number(report.prediction.psi)}, "
        f"{report.prediction.band.label}</p>"
    )
    coverage = (
        ""
        if report.coverage is None
        else f"<p>Vocabulary coverage: {report.coverage:.3f} "
        f"(reference {_number(report.reference_coverage)})</p>"
    )
    decision = "RETRAIN: drift above the threshold" if report.retrain else "no retraining needed"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Kindle review drift report</title></head>
<body style="font-family: sans-serif">
<h1>Drift report</h1>
<p><b>{decision}</b>: max PSI {_number(report.max_psi)}, threshold {report.threshold},
{report.rows} production rows (PSI needs at least {report.min_rows}).</p>
{prediction}
{coverage}
<table border="1" cellpadding="4"><tr><th>feature</th><th>PSI</th><th>band</th><th>rows</th></tr>
{rows}
</table>
<img src="psi.png" alt="PSI per feature">
{plots}
</body></html>
"""
