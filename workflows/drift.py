"""The drift check: the champion's reference vs a window of production traffic, and retraining
on labelled feedback when the traffic has drifted.

    pyflyte run workflows/drift.py drift_check --batch_dir BATCHES --feedback_dir FEEDBACK \\
        --training_input PATH [--settings '{"kinds": "logreg"}']

`settings` are the training pipeline's (`PipelineSettings`): the MLflow store, model and
experiment the check reads, and how a challenger is trained.

1. The champion (MLflow alias `champion`): its version, when it was registered, the
   newest feedback it was trained on, and its bundle (drift reference, vocabulary).
2. The window: production rows since the champion was registered (or the last
   `window_hours`), compared with the reference (libs/drift PSI report, logged to MLflow);
   batch files of another feature contract are left out, counted (printed, with a few
   names, and logged as the metric `skipped_batch_files`). Beside PSI, in the same HTML
   report and MLflow run: the champion's accuracy, macro-F1 and MAE estimated from the
   window's logged probabilities, the same metrics realised on the window's labelled
   feedback (scored by the champion) and how far apart they are, the feedback's
   reliability diagram, and text drift by a domain classifier (when the batch log keeps
   texts, `KINDLE_BATCH_KEEP_TEXT`, against the reference texts of the bundle).
3. The decision: neither drift nor a drop (estimated macro-F1 more than
   `performance_max_drop` below the champion's test macro-F1) -> says so; either, but no
   labelled feedback newer than what the champion trained on -> says so and does not
   retrain; either and new feedback -> the training pipeline on the training input plus the
   feedback, whose challenger is promoted only if it is not worse than the champion
   (`training_pipeline`'s decision).
A `LaunchPlan` runs it daily on a `CronSchedule`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import fsspec
import numpy as np
import pandas as pd
from flytekit import CronSchedule, LaunchPlan, Resources, conditional, current_context, task, workflow
from flytekit.types.directory import FlyteDirectory
from fsspec.implementations.local import LocalFileSystem

from libs.drift import PerformanceCheck, ReferenceProfile, check_performance, compare
from libs.drift.domain import MIN_ROWS as DOMAIN_MIN_ROWS
from libs.drift.domain import DomainDrift, domain_drift
from libs.drift.profile import REFERENCE_TEXTS, sample_texts
from libs.features import CLEAN_COLUMN, TEXT_COLUMN
from libs.production import ProductionData, load_production, read_feedback, since
from workflows.image import TASK_IMAGE
from workflows.pipeline import resolve_settings, training_pipeline
from workflows.settings import RUN_SETTINGS, SETTINGS, PipelineSettings

if TYPE_CHECKING:
    from libs.models.bundle import ModelBundle


@dataclass
class ChampionInfo:
    version: str
    registered_at: str  # ISO time the version was registered
    feedback_until: str  # ISO time of the newest feedback a challenger was trained on ("" when none)
    bundle: FlyteDirectory


@dataclass
class DriftOutcome:
    drift: bool
    max_psi: float
    state: str
    rows: int
    window_start: str
    report: FlyteDirectory
    mlflow_run_id: str
    skipped_files: int = 0  # batch files of another feature contract left out
    degraded: bool = False  # estimated macro-F1 more than the allowed drop below the test macro-F1
    estimated_macro_f1: float = float("nan")
    test_macro_f1: float = float("nan")

    @property
    def reasons(self) -> str:
        """What calls for retraining, in words ("" when nothing does)."""
        found = [f"drift (max PSI {self.max_psi:.3f})"] if self.drift else []
        if self.degraded:
            found.append(
                f"estimated macro-F1 {self.estimated_macro_f1:.3f} below the test macro-F1 "
                f"{self.test_macro_f1:.3f}"
            )
        return " and ".join(found)


class RetrainDecision(NamedTuple):
    retrain: bool
    message: str


@task(container_image=TASK_IMAGE, requests=Resources(cpu="500m", mem="1Gi"))
def load_champion(settings: PipelineSettings) -> ChampionInfo:
    """The serving champion's version, registration time, feedback watermark and bundle.

    Not cached: the alias moves whenever a new champion is promoted.
    """
    from libs.models.training.stages import FEEDBACK_TAG
    from libs.models.training.tracking import client_for, current_champion

    model_name = settings.model_name
    found = current_champion(settings, Path(current_context().working_directory) / "champion")
    if found is None:
        raise RuntimeError(
            f"no champion of model {model_name!r} in the MLflow store of {settings.output_dir}: "
            "run the training pipeline first"
        )
    version, bundle = found
    registered = datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).isoformat()
    print(f"drift: champion {model_name} v{version.version}, registered {registered}")
    return ChampionInfo(
        str(version.version),
        registered,
        client_for(settings).get_registered_model(model_name).tags.get(FEEDBACK_TAG, ""),
        FlyteDirectory(str(bundle)),
    )


def _local_copy(uri: str, folder: Path) -> Path:
    """Production data may be an fsspec URL; libs.production reads local paths."""
    fs, path = fsspec.core.url_to_fs(uri)
    if isinstance(fs, LocalFileSystem):
        return Path(path)
    target = folder / Path(path).name
    fs.get(path, str(target), recursive=fs.isdir(path))
    return target


SKIPPED_METRIC = "skipped_batch_files"
"""MLflow metric of a drift check: batch files left out for another feature contract."""
SKIPPED_NAMED = 3


def skipped_note(skipped: Sequence[Path]) -> str:
    """What the check says of the batch files it left out ("" when none): how many, a few names."""
    if not skipped:
        return ""
    names = ", ".join(path.name for path in skipped[:SKIPPED_NAMED])
    more = f" and {len(skipped) - SKIPPED_NAMED} more" if len(skipped) > SKIPPED_NAMED else ""
    return (
        f"{len(skipped)} batch file(s) of another feature contract skipped, not checked: {names}{more} "
        "(written before the contract changed; they age out of the folder)"
    )


def window_performance(
    bundle: ModelBundle, data: ProductionData, feedback: pd.DataFrame, max_drop: float
) -> PerformanceCheck:
    """The champion's performance on the window: estimated from the probabilities the batch log
    kept (or, for a file of raw reviews, from scoring them), realised on the feedback."""
    proba = data.probabilities
    if proba is None and CLEAN_COLUMN in data.features.columns:
        proba = bundle.predict_features(data.features)
    feedback_proba = feedback_stars = None
    if len(feedback):
        summaries = feedback["summary"].tolist() if "summary" in feedback.columns else None
        feedback_proba = bundle.predict_proba(feedback["reviewText"].tolist(), summaries)
        feedback_stars = feedback["overall"].astype(int).to_numpy()
    return check_performance(
        np.empty((0, len(bundle.labels))) if proba is None else proba,
        feedback_proba,
        feedback_stars,
        reference=bundle.test_metrics,
        max_drop=max_drop,
    )


def window_text_drift(reference: ReferenceProfile, data: ProductionData) -> DomainDrift | None:
    """The domain classifier on the reference texts against (a sample of) the window's texts,
    when both sides have enough."""
    if TEXT_COLUMN not in data.features.columns:
        return None
    texts = sample_texts([str(text) for text in data.features[TEXT_COLUMN].dropna()], REFERENCE_TEXTS)
    if min(len(texts), len(reference.texts)) < DOMAIN_MIN_ROWS:
        return None
    return domain_drift(list(reference.texts), list(texts))


@task(
    container_image=TASK_IMAGE, requests=Resources(cpu="1", mem="2Gi"), limits=Resources(cpu="2", mem="4Gi")
)
def drift_report(
    champion: ChampionInfo,
    production: str,
    feedback: str,
    window_hours: float,
    threshold: float,
    max_drop: float,
    settings: PipelineSettings,
) -> DriftOutcome:
    """libs.drift's batch check of the window (PSI, performance, text drift) + HTML report,
    logged as an MLflow run."""
    import mlflow

    from libs.drift.reports import log_report_to_mlflow, write_html_report
    from libs.models.bundle import load_bundle
    from libs.models.training.tracking import configure

    work = Path(current_context().working_directory)
    bundle = load_bundle(Path(champion.bundle.download()))
    if bundle.drift_reference is None:
        raise RuntimeError(f"champion v{champion.version} has no drift reference in its bundle")
    start = (
        datetime.now(UTC) - timedelta(hours=window_hours)
        if window_hours
        else datetime.fromisoformat(champion.registered_at)
    )
    data = load_production(_local_copy(production, work), start)
    skipped = skipped_note(data.skipped_files)
    if skipped:
        print(f"drift: {skipped}")
    coverage = None
    if CLEAN_COLUMN in data.features.columns and bundle.tfidf is not None:
        coverage = bundle.tfidf.coverage(data.features[CLEAN_COLUMN].tolist())
    report = compare(bundle.drift_reference, data.features, data.predicted_labels, coverage, threshold)
    labelled = since(read_feedback(_local_copy(feedback, work)), start) if feedback else pd.DataFrame()
    performance = window_performance(bundle, data, labelled, max_drop)
    text = window_text_drift(bundle.drift_reference, data)
    folder = work / "drift_report"
    write_html_report(report, folder, performance, text)
    configure(settings)
    with mlflow.start_run(run_name="drift-check") as run:
        mlflow.set_tags(
            {"kind": "drift_check", "champion_version": champion.version, "window_start": start.isoformat()}
        )
        log_report_to_mlflow(report, folder, performance, text)
        mlflow.log_metric(SKIPPED_METRIC, len(data.skipped_files))
    max_psi = float(report.max_psi) if report.max_psi is not None else float("nan")
    print(
        f"drift: {report.rows} rows since {start.isoformat()}, max PSI {max_psi:.4f} ({report.state.label}); "
        f"psi {json.dumps({f.name: f.psi for f in report.features})}; "
        f"performance {json.dumps(performance.to_dict() | {'reliability': None})}"
    )
    estimated = performance.estimate.values["macro_f1"] if performance.estimate is not None else math.nan
    return DriftOutcome(
        bool(report.retrain),
        max_psi,
        str(report.state.label),
        int(report.rows),
        start.isoformat(),
        FlyteDirectory(str(folder)),
        run.info.run_id,
        len(data.skipped_files),
        performance.degraded,
        estimated,
        performance.reference.get("macro_f1", math.nan),
    )


@task(container_image=TASK_IMAGE, requests=Resources(cpu="500m", mem="1Gi"))
def decide_retraining(
    outcome: DriftOutcome, champion: ChampionInfo, feedback: str, training_input: str
) -> RetrainDecision:
    """Retrain only on drift or a performance drop, and only with labelled feedback the champion
    has not trained on."""
    if not outcome.reasons:
        return RetrainDecision(
            False,
            f"no drift: max PSI {outcome.max_psi:.3f} ({outcome.state}) over {outcome.rows} rows since "
            f"{outcome.window_start}, estimated macro-F1 {outcome.estimated_macro_f1:.3f} "
            f"(report run {outcome.mlflow_run_id}"
            + (
                f"; {outcome.skipped_files} batch file(s) of another feature contract skipped)"
                if outcome.skipped_files
                else ")"
            ),
        )
    watermark = datetime.fromisoformat(champion.feedback_until) if champion.feedback_until else None
    labelled = read_feedback(Path(feedback)) if feedback else None
    new = 0 if labelled is None else len(since(labelled, watermark, strict=True))
    if new <= 0:
        return RetrainDecision(
            False,
            f"{outcome.reasons} but no labelled feedback newer than what the last "
            f"challenger trained on (champion v{champion.version}): not retraining",
        )
    if not training_input:
        raise ValueError(
            f"{outcome.reasons} and new feedback, but no training input: set --training_input "
            "(KINDLE_TRAINING_INPUT)"
        )
    return RetrainDecision(True, f"{outcome.reasons} and {new} new labelled reviews: training a challenger")


@task(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="256Mi"))
def no_retraining(message: str) -> str:
    """The else branch: nothing to do, said plainly."""
    print(message)
    return message


@workflow
def drift_check(
    batch_dir: str = SETTINGS.batch_dir or "",
    feedback_dir: str = SETTINGS.feedback_dir or "",
    training_input: str = SETTINGS.training_input,
    window_hours: float = SETTINGS.drift_window_hours,
    threshold: float = SETTINGS.drift_threshold,
    max_drop: float = SETTINGS.performance_max_drop,
    settings: PipelineSettings = RUN_SETTINGS,
) -> str:
    """Drift and performance report on the production window; retrains on new labelled feedback
    when it drifted or its estimated macro-F1 dropped."""
    run = resolve_settings(settings=settings)
    champion = load_champion(settings=run)
    outcome = drift_report(
        champion=champion,
        production=batch_dir,
        feedback=feedback_dir,
        window_hours=window_hours,
        threshold=threshold,
        max_drop=max_drop,
        settings=run,
    )
    retrain, message = decide_retraining(
        outcome=outcome, champion=champion, feedback=feedback_dir, training_input=training_input
    )
    return (
        conditional("drift_decision")
        .if_(retrain.is_true())
        .then(training_pipeline(input=training_input, feedback_dir=feedback_dir, settings=settings))
        .else_()
        .then(no_retraining(message=message))
    )


drift_check_daily = LaunchPlan.get_or_create(
    workflow=drift_check,
    name="kindle_drift_check_daily",
    schedule=CronSchedule(schedule=SETTINGS.drift_cron),
)
"""The scheduled drift check (KINDLE_DRIFT_CRON, default 06:00 UTC daily) on the service's batches."""
