"""Batch drift check: `python -m libs.drift.reports.cli --reference ref.json --production DATA --out DIR`.

DATA is a Parquet/CSV file of raw reviews (reviewText[, summary]) or of computed
features, or a folder of batches persisted by the service. Writes the HTML report,
plots and report.json to DIR and prints the report's summary as one JSON line; the
exit code is 0 whatever the verdict (the workflow reads `retrain` from report.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from libs.drift.compare import DriftReport, compare
from libs.drift.profile import ReferenceProfile
from libs.drift.psi import DEFAULT_MIN_ROWS, DRIFT_THRESHOLD
from libs.drift.reports.html import write_html_report
from libs.features import CLEAN_COLUMN, Tfidf
from libs.production import load_production


def check_drift(
    reference: Path,
    production: Path,
    out: Path,
    threshold: float = DRIFT_THRESHOLD,
    min_rows: int = DEFAULT_MIN_ROWS,
    tfidf: Path | None = None,
) -> DriftReport:
    """Loads both sides, compares them and writes the report folder.

    With `tfidf` (the model's saved vectoriser) and raw reviews, vocabulary coverage
    is measured too.
    """
    profile = ReferenceProfile.load(reference)
    data = load_production(production)
    coverage = None
    if tfidf is not None and CLEAN_COLUMN in data.features.columns:
        coverage = Tfidf.load(tfidf).coverage(data.features[CLEAN_COLUMN].tolist())
    report = compare(profile, data.features, data.predicted_labels, coverage, threshold, min_rows)
    write_html_report(report, out)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m libs.drift.reports.cli", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--reference", type=Path, required=True, help="reference profile JSON")
    parser.add_argument("--production", type=Path, required=True, help=".parquet, .csv or batch folder")
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--threshold", type=float, default=DRIFT_THRESHOLD)
    parser.add_argument("--min-rows", type=int, default=DEFAULT_MIN_ROWS)
    parser.add_argument("--tfidf", type=Path, help="saved TF-IDF vectoriser, for vocabulary coverage")
    args = parser.parse_args(argv)
    report = check_drift(args.reference, args.production, args.out, args.threshold, args.min_rows, args.tfidf)
    summary = {
        "retrain": report.retrain,
        "max_psi": report.max_psi,
        "state": report.state.label,
        "rows": report.rows,
        "psi": {f.name: f.psi for f in report.features},
        "report": str(args.out / "index.html"),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
