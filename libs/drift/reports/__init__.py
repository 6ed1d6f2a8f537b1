"""libs.drift.reports: the batch drift check's outputs, apart from the live monitor.

The service imports `libs.drift` for the live monitor only; these need matplotlib and
MLflow, which serving does not ship.

- `write_html_report(report, folder)`: HTML page, PNG plots and report.json.
- `log_report_to_mlflow(report, folder)`: the folder as artifacts, PSI values as metrics.
- `check_drift(reference, production, out)`: the CLI's function
  (`python -m libs.drift.reports.cli`).
"""

from libs.drift.reports.cli import check_drift
from libs.drift.reports.html import write_html_report
from libs.drift.reports.mlflow_log import log_report_to_mlflow

__all__ = ["check_drift", "log_report_to_mlflow", "write_html_report"]
