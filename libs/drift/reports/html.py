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
from libs.drift.domain import DomainDrift
from libs.drift.performance import METRICS, PerformanceCheck
from libs.drift.psi import MODERATE_THRESHOLD

_COLOURS = {"stable": "#2e7d32", "moderate": "#f9a825", "drift": "#c62828", "insufficient": "#9e9e9e"}


def write_html_report(
    report: DriftReport,
    folder: Path,
    performance: PerformanceCheck | None = None,
    domain: DomainDrift | None = None,
) -> Path:
    """Writes report.json, psi.png, one <feature>.png each and index.html; returns index.html.

    With `performance`: a section of the estimated and realised metrics and their difference,
    and the feedback's reliability diagram (reliability.png); with `domain`: the text drift
    section, the domain classifier's AUC, verdict and separating terms."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    content = report.to_dict() | {
        "performance": None if performance is None else performance.to_dict(),
        "text_drift": None if domain is None else domain.to_dict(),
    }
    (folder / "report.json").write_text(json.dumps(content, indent=1))
    _psi_chart(report, folder / "psi.png")
    for feature in report.features:
        _histogram(feature, folder / f"{feature.name}.png")
    if performance is not None and performance.reliability is not None:
        _reliability(performance.reliability, folder / "reliability.png")
    index = folder / "index.html"
    index.write_text(_page(report, _performance_section(performance), _text_section(domain)))
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


def _reliability(points: tuple[list[float], list[float], list[float]], path: Path) -> None:
    share, confidence, accuracy = points
    figure = Figure(figsize=(5, 4.5))
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    axes.scatter(confidence, accuracy, s=[max(400 * x, 12) for x in share], label="feedback (size: share)")
    axes.plot(confidence, accuracy, linewidth=1)
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="probability of the predicted star", ylabel="accuracy")
    axes.set_title("Reliability on the window's feedback")
    axes.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    FigureCanvasAgg(figure).print_png(str(path))


def _performance_section(check: PerformanceCheck | None) -> str:
    if check is None:
        return ""
    estimate, realised, error = check.estimate, check.realised, check.error
    rows = "\n".join(
        f"<tr><td>{name}</td>"
        f"<td>{_number(None if estimate is None else estimate.values[name])}</td>"
        f"<td>{'' if estimate is None else f'{estimate.low[name]:.3f} – {estimate.high[name]:.3f}'}</td>"
        f"<td>{_number(None if realised is None else realised[name])}</td>"
        f"<td>{_number(None if error is None else error[name])}</td>"
        f"<td>{_number(check.reference.get(name))}</td></tr>"
        for name in METRICS
    )
    verdict = (
        f"<b>DEGRADED</b>: estimated macro-F1 more than {check.max_drop} below the test macro-F1"
        if check.degraded
        else f"no drop beyond {check.max_drop} in estimated macro-F1"
    )
    rows_note = (
        "too few scored reviews with probabilities to estimate"
        if estimate is None
        else f"estimated on {estimate.rows} scored reviews"
    )
    reliability = (
        '<img src="reliability.png" alt="reliability diagram">'
        if check.reliability is not None
        else "<p>No labelled feedback in the window: no reliability diagram.</p>"
    )
    return f"""<section id="performance"><h2>Performance</h2>
<p>{verdict}; {rows_note}, realised on {check.feedback_rows} labelled feedback reviews.</p>
<table border="1" cellpadding="4"><tr><th>metric</th><th>estimated</th><th>95 % interval</th>
<th>realised (feedback)</th><th>estimate − realised</th><th>test</th></tr>
{rows}
</table></section>
<section id="reliability"><h2>Reliability</h2>{reliability}</section>"""


def _text_section(domain: DomainDrift | None) -> str:
    if domain is None:
        return (
            '<section id="text-drift"><h2>Text drift</h2><p>Not checked: the window has no review '
            "texts (KINDLE_BATCH_KEEP_TEXT) or the reference none.</p></section>"
        )

    def terms(pairs: list[tuple[str, float]]) -> str:
        return "".join(f"<li>{html.escape(term)} ({weight:.2f})</li>" for term, weight in pairs)

    verdict = "TEXT DRIFT" if domain.drifted else "no text drift"
    return f"""<section id="text-drift"><h2>Text drift</h2>
<p><b>{verdict}</b>: domain classifier ROC-AUC {domain.roc_auc:.3f} (threshold {domain.threshold}),
{domain.reference_rows} reference and {domain.production_rows} production texts.</p>
<div style="display:flex; gap:3em"><div><h3>Terms of production</h3><ol class="production-terms">
{terms(domain.production_terms)}</ol></div>
<div><h3>Terms of the reference</h3><ol class="reference-terms">
{terms(domain.reference_terms)}</ol></div></div>
</section>"""


def _page(report: DriftReport, performance: str = "", text: str = "") -> str:
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
{performance}
{text}
<section id="features"><h2>Feature drift</h2>
<table border="1" cellpadding="4"><tr><th>feature</th><th>PSI</th><th>band</th><th>rows</th></tr>
{rows}
</table>
<img src="psi.png" alt="PSI per feature">
{plots}
</section>
</body></html>
"""
