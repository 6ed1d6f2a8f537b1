"""The drift check: champion's reference (MLflow alias `champion`) vs production data.

`pyflyte run workflows/drift.py drift_check --production PATH` computes the libs/drift
PSI report on PATH (a .csv/.parquet of raw reviews or features, or the folder of
batches the service persisted), logs it to MLflow, and, through a Flyte `conditional`,
either launches the training pipeline (decision `retrain`: max feature PSI above the
threshold) or ends with "no drift". `drift_check_daily` runs it on a CronSchedule.

Why the reference comes from the registry and not from a file path: the service serves
the `champion` alias, so "has production drifted?" only means something against the
profile of that exact model version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import fsspec
from flytekit import CronSchedule, LaunchPlan, Resources, conditional, current_context, task, workflow
from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile
from fsspec.implementations.local import LocalFileSystem

from libs.drift import ReferenceProfile, compare, load_production, log_report_to_mlflow, write_html_report
from libs.features import CLEAN_COLUMN, Tfidf
from workflows.image import TASK_IMAGE
from workflows.register import REFERENCE_ARTIFACT, TFIDF_ARTIFACT, champion_version
from workflows.settings import SETTINGS
from workflows.training import tracking_uri_of, training_pipeline


@dataclass
class ChampionReference:
    reference: FlyteFile
    tfidf: FlyteFile
    model_version: str
    run_id: str


@dataclass
class DriftOutcome:
    retrain: bool
    max_psi: float
    state: str
    rows: int
    report: FlyteDirectory
    mlflow_run_id: str


class DriftOutputs(NamedTuple):
    retrain: bool
    outcome: DriftOutcome


@task(container_image=TASK_IMAGE, requests=Resources(cpu="500m", mem="1Gi"))
def load_champion_reference(tracking_uri: str, model_name: str) -> ChampionReference:
    """Downloads the drift reference and TF-IDF the champion was registered with.

    Not cached: the alias moves whenever a new champion is registered.
    """
    import mlflow

    version = champion_version(tracking_uri, model_name)
    folder = Path(current_context().working_directory) / "champion"
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    reference = client.download_artifacts(version.run_id, REFERENCE_ARTIFACT, str(folder))
    tfidf = client.download_artifacts(version.run_id, TFIDF_ARTIFACT, str(folder))
    ReferenceProfile.load(Path(reference))  # fail here, naming the file, if it is unreadable
    print(f"drift: champion {model_name} v{version.version} (run {version.run_id})")
    return ChampionReference(FlyteFile(reference), FlyteFile(tfidf), str(version.version), version.run_id)


def _local_copy(uri: str, folder: Path) -> Path:
    """Production data may be an fsspec URL; libs.drift reads local paths."""
    fs, path = fsspec.core.url_to_fs(uri)
    if isinstance(fs, LocalFileSystem):
        return Path(path)
    target = folder / Path(path).name
    fs.get(path, str(target), recursive=fs.isdir(path))
    return target


@task(
    container_image=TASK_IMAGE, requests=Resources(cpu="1", mem="2Gi"), limits=Resources(cpu="2", mem="4Gi")
)
def drift_report(
    champion: ChampionReference,
    production: str,
    threshold: float,
    tracking_uri: str,
    experiment: str,
) -> DriftOutputs:
    """libs.drift's batch check + HTML report, logged as an MLflow run tagged with the champion."""
    import mlflow

    work = Path(current_context().working_directory)
    profile = ReferenceProfile.load(Path(champion.reference.download()))
    data = load_production(_local_copy(production, work))
    coverage = None
    if CLEAN_COLUMN in data.features.columns:
        coverage = Tfidf.load(Path(champion.tfidf.download())).coverage(data.features[CLEAN_COLUMN].tolist())
    report = compare(profile, data.features, data.predicted_labels, coverage, threshold)
    folder = work / "drift_report"
    write_html_report(report, folder)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name="drift-check") as run:
        mlflow.set_tags(
            {
                "kind": "drift_check",
                "champion_version": champion.model_version,
                "champion_run_id": champion.run_id,
                "production": production,
            }
        )
        log_report_to_mlflow(report, folder)
    max_psi = float(report.max_psi) if report.max_psi is not None else float("nan")
    summary = {f.name: f.psi for f in report.features}
    print(
        f"drift: rows={report.rows} max_psi={max_psi:.4f} state={report.state.label} "
        f"retrain={report.retrain} psi={json.dumps(summary)}"
    )
    outcome = DriftOutcome(
        retrain=bool(report.retrain),
        max_psi=max_psi,
        state=str(report.state.label),
        rows=int(report.rows),
        report=FlyteDirectory(str(folder)),
        mlflow_run_id=run.info.run_id,
    )
    return DriftOutputs(outcome.retrain, outcome)


@task(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="256Mi"))
def no_drift(outcome: DriftOutcome) -> str:
    """The else branch: nothing to do, said plainly."""
    message = (
        f"no drift (max PSI {outcome.max_psi:.3f}, {outcome.rows} rows, report run {outcome.mlflow_run_id})"
    )
    print(message)
    return message


@task(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="256Mi"))
def retraining_input(training_input: str, production: str) -> str:
    """What to retrain on: the configured training data, else the production data itself.

    Production batches carry no star ratings, so without a training input the retrain
    fails fast in ingest, naming the missing `overall` column, rather than guessing.
    """
    chosen = training_input or production
    print(f"drift: training input should the report say retrain: {chosen}")
    return chosen


@workflow
def drift_check(
    production: str,
    training_input: str = SETTINGS.training_input,
    threshold: float = SETTINGS.drift_threshold,
    output_dir: str = SETTINGS.output_dir,
    mlflow_uri: str = SETTINGS.mlflow_uri,
    model_name: str = SETTINGS.model_name,
    experiment: str = SETTINGS.experiment,
    kinds: str = SETTINGS.kinds,
    trials: int = SETTINGS.trials,
    timeout_s: float = SETTINGS.timeout_s,
    max_per_class: int = SETTINGS.max_per_class,
    seed: int = SETTINGS.seed,
    build_bento: bool = SETTINGS.build_bento,
) -> str:
    """Drift report on `production`; retrains (the training pipeline) only when it says so."""
    tracking = tracking_uri_of(output_dir=output_dir, mlflow_uri=mlflow_uri)
    champion = load_champion_reference(tracking_uri=tracking, model_name=model_name)
    retrain, outcome = drift_report(
        champion=champion,
        production=production,
        threshold=threshold,
        tracking_uri=tracking,
        experiment=experiment,
    )
    data = retraining_input(training_input=training_input, production=production)
    return (
        conditional("drift_decision")
        .if_(retrain.is_true())
        .then(
            training_pipeline(
                input=data,
                output_dir=output_dir,
                mlflow_uri=mlflow_uri,
                model_name=model_name,
                experiment=experiment,
                kinds=kinds,
                trials=trials,
                timeout_s=timeout_s,
                max_per_class=max_per_class,
                seed=seed,
                build_bento=build_bento,
            )
        )
        .else_()
        .then(no_drift(outcome=outcome))
    )


drift_check_daily = LaunchPlan.get_or_create(
    workflow=drift_check,
    name="kindle_drift_check_daily",
    schedule=CronSchedule(schedule=SETTINGS.drift_cron),
    default_inputs={"production": SETTINGS.production},
)
"""The scheduled drift check (KINDLE_WF_DRIFT_CRON, default 06:00 UTC daily) on the service's batches."""
