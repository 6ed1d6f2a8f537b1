"""Logs a drift report into the active MLflow run: metrics to compare runs, files to read."""

from __future__ import annotations

from pathlib import Path

from libs.drift.compare import DriftReport

ARTIFACT_PATH = "drift"


def log_report_to_mlflow(report: DriftReport, folder: Path) -> None:
    """Logs `folder` (from `write_html_report`) under artifacts/drift and the PSI values as metrics.

    mlflow is imported here, not at module level: the service imports libs.drift for the
    live monitor and should not pay seconds of mlflow import for it.
    """
    import mlflow

    if mlflow.active_run() is None:
        raise RuntimeError("log_report_to_mlflow needs an active MLflow run (mlflow.start_run())")
    metrics = {f"drift_psi_{f.name}": f.psi for f in report.features if f.psi is not None}
    if report.max_psi is not None:
        metrics["drift_max_psi"] = report.max_psi
    if report.prediction is not None and report.prediction.psi is not None:
        metrics["drift_prediction_psi"] = report.prediction.psi
    metrics["drift_retrain"] = float(report.retrain)
    metrics["drift_rows"] = float(report.rows)
    mlflow.log_metrics(metrics)
    mlflow.log_artifacts(str(folder), artifact_path=ARTIFACT_PATH)
