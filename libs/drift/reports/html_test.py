"""Report outputs: HTML with PNG plots, MLflow artifacts and metrics in a real SQLite store."""

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from libs.drift import DriftReport, ReferenceProfile, compare
from libs.drift.reports import log_report_to_mlflow, write_html_report
from libs.features import CONTRACT, compute_features
from tests import fixtures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report() -> DriftReport:
    books = fixtures.kindle_sample()
    devices = fixtures.kindle_devices()
    reference = ReferenceProfile.build(
        compute_features(books["reviewText"].tolist(), books["summary"].tolist()),
        predicted_labels=books["overall"].tolist(),
    )
    production = compute_features(devices["reviewText"].tolist(), devices["summary"].tolist())
    return compare(reference, production, predicted_labels=devices["overall"].tolist(), coverage=0.8)


def test_html_report_links_a_plot_per_feature_and_the_psi_chart(report: DriftReport, tmp_path: Path) -> None:
    index = write_html_report(report, tmp_path)
    page = index.read_text()
    for name in [*CONTRACT.numeric_names, "psi"]:
        assert f'src="{name}.png"' in page
        assert (tmp_path / f"{name}.png").read_bytes().startswith(PNG_MAGIC)
    assert "RETRAIN" in page
    assert "Prediction drift" in page


def test_report_folder_holds_the_json_report(report: DriftReport, tmp_path: Path) -> None:
    write_html_report(report, tmp_path)
    assert pd.read_json(tmp_path / "report.json", typ="series")["retrain"]


@pytest.fixture
def tracking(tmp_path: Path) -> Iterator[None]:
    """A local SQLite store whose artifacts stay under tmp_path; the previous URI comes back after."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = MlflowClient().create_experiment(
        "drift", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    mlflow.set_experiment(experiment_id=experiment)
    yield
    mlflow.set_tracking_uri(previous)


@pytest.mark.usefixtures("tracking")
def test_report_is_logged_into_the_active_mlflow_run(report: DriftReport, tmp_path: Path) -> None:
    folder = tmp_path / "report"
    write_html_report(report, folder)
    with mlflow.start_run() as run:
        log_report_to_mlflow(report, folder)
    client = MlflowClient()
    metrics = client.get_run(run.info.run_id).data.metrics
    assert metrics["drift_max_psi"] == pytest.approx(report.max_psi)
    assert metrics["drift_psi_text_len"] == pytest.approx(report.feature("text_len").psi)
    assert metrics["drift_retrain"] == 1.0
    artifacts = {entry.path for entry in client.list_artifacts(run.info.run_id, "drift")}
    assert {"drift/index.html", "drift/psi.png", "drift/report.json"} <= artifacts


def test_logging_without_an_active_run_is_refused(report: DriftReport, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="needs an active MLflow run"):
        log_report_to_mlflow(report, tmp_path)
