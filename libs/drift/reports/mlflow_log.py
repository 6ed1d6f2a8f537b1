"""Logs a drift report into the active MLflow run: metrics to compare runs, files to read."""

from __future__ import annotations

from pathlib import Path

from libs.drift.compare import DriftReport
from libs.drift.domain import DomainDrift
from libs.drift.performance import PerformanceCheck

ARTIFACT_PATH = "drift"


def log_report_to_mlflow(
    report: DriftReport,
    folder: Path,
    performance: PerformanceCheck | None = None,
    domain: DomainDrift | None = None,
) -> None:
    """Logs `folder` (from `write_html_report`) under artifacts/drift and the PSI values as
    metrics; with `performance`, `estimated_<metric>`, `realised_<metric>`, `estimate_error_<metric>`,
    `feedback_rows` and `performance_degraded`; with `domain`, `domain_auc` and `text_drift`.

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
    if performance is not None:
        metrics |= _performance_metrics(performance)
    if domain is not None:
        metrics |= {"domain_auc": domain.roc_auc, "text_drift": float(domain.drifted)}
    mlflow.log_metrics(metrics)
    mlflow.log_artifacts(str(folder), artifact_path=ARTIFACT_PATH)


def _performance_metrics(check: PerformanceCheck) -> dict[str, float]:
    metrics = {"feedback_rows": float(check.feedback_rows), "performance_degraded": float(check.degraded)}
    for prefix, values in (
        ("estimated", None if check.estimate is None else check.estimate.values),
        ("realised", check.realised),
        ("estimate_error", check.error),
    ):
        metrics |= {f"{prefix}_{name}": value for name, value in (values or {}).items()}
    return metrics
