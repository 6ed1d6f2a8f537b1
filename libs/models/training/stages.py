"""The training run as typed stages: open the run -> search each kind -> select the champion
-> finish its bundle -> decide against the serving champion -> record and publish.

The Flyte pipeline (`workflows/`) runs them as tasks, thin adapters that move data in and
files out; the tests drive the very same functions in one process.

What each stage guarantees:
- `open_run`: the run's parent MLflow run, left running for the kinds to nest under.
- `search_kind`: an Optuna study on train/validation (resumable: its storage outlives the
  task), then the chosen configuration refit on train + validation with the vocabulary
  fitted on both, saved as that kind's candidate bundle. No labelled row is held back
  from the final model except the test split. The transformer is the exception: its best
  trial's model, fitted on train, is the candidate (a second fine-tune would double the
  slowest step of the run for a few hundred more rows), and its validation scores are
  then out of sample, as the ensemble's weight needs.
- `build_ensemble` (`ensemble.py`): the soft vote of the transformer and the best TF-IDF
  kind, its weight chosen on validation.
- `select_champion`: best validation score of the selection metric
  (`TrainingSettings.selection_metric`, macro-F1 by default) among kinds within the
  latency budget.
- `finish_bundle`: the champion's test metrics (reported, never used to choose) and its
  drift reference (numeric features with the natural star mix, predicted-label shares and
  vocabulary coverage on the held-out test split); the final bundle is written once.
- `decide`: the challenger and the serving champion scored on the same evaluation data,
  this run's test split and the lineage's frozen set (`frozen.py`); promoted unless it is
  worse by more than the margin on either, by the same selection metric.
- `publish`: a promoted challenger is registered and becomes `champion` (`previous` is
  the old one); a rejected one moves nothing. The first registration freezes the
  evaluation set.
- `conclude`: the last four in order, each kind's outcome, the champion's report and the
  decision recorded in the parent run, which it finishes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from libs.drift import ReferenceProfile
from libs.features import CLEAN_COLUMN, CONTRACT, TEXT_COLUMN, Tfidf
from libs.models.bundle import ModelBundle, load_bundle, model_bytes, model_digest, save_bundle
from libs.models.components import FeatureMatrix
from libs.models.kinds import LABELS, ModelKind
from libs.models.training.calibration import choose_calibration
from libs.models.training.data import fingerprint, labels_of
from libs.models.training.estimators import build_estimator, build_learner
from libs.models.training.evaluation import evaluate, latency_ms, selection_score
from libs.models.training.frozen import FROZEN_TAG, freeze, frozen_run, load_frozen_set
from libs.models.training.selection import SelectionMetric
from libs.models.training.settings import TrainingSettings
from libs.models.training.tracking import (
    configure,
    current_champion,
    promote,
    register,
    run_tags,
    trial_logger,
)
from libs.models.training.tuning import TrialInputs, finished_trials, run_study, trial_model_folder

logger = logging.getLogger("kindle.models.stages")

CANDIDATE_ARTIFACT = "candidate"
"""Where each kind's run keeps its candidate bundle (the chosen configuration, refit)."""
SEARCH_SPACE_VERSION = "3"
"""Part of every study's name: bump it when a search space changes, so no study resumes
with trials drawn from another space."""


@dataclass
class KindResult:
    """One kind's search and its candidate: the chosen configuration refit on train + validation."""

    kind: str
    params: dict[str, Any]
    validation: dict[str, float]  # metrics of the chosen configuration fitted on train
    latency_ms: float  # its per-review model latency on precomputed features (p50)
    trials: int  # finished trials in the study, resumed ones included
    feasible: bool  # within the latency budget
    study: str
    seconds: float
    bundle: Path  # the candidate bundle
    run_id: str | None = None
    val_proba: list[list[float]] = dataclasses.field(default_factory=list)  # of the chosen trial

    @property
    def val_macro_f1(self) -> float:
        return self.validation["macro_f1"]

    def val_score(self, metric: SelectionMetric) -> float:
        """The chosen configuration's validation score of `metric`, in the metric's units."""
        return self.validation[metric]


@dataclass
class Finished:
    """The champion's final bundle and its test-split report."""

    kind: str
    bundle: Path
    test: dict[str, float]
    report_files: list[Path]


@dataclass
class Decision:
    """Whether the challenger replaces the serving champion, with both scores on the same data:
    scores of `metric`, the run's selection metric, in its units."""

    promote: bool
    reason: str
    metric: SelectionMetric
    challenger_score: float
    champion_score: float | None
    champion_version: str | None
    evaluation_rows: int
    frozen_challenger_score: float | None = None  # on the lineage's frozen set, when it has one
    frozen_champion_score: float | None = None
    frozen_rows: int = 0


@dataclass
class Concluded:
    """The run's end: the champion's final bundle, the decision, and the version it published."""

    finished: Finished
    decision: Decision
    version: str | None


NOT_SEARCHED = frozenset({"kinds", "model_name", "promotion_margin"})
"""Settings `search_kind` does not read: choosing kinds, naming and promoting the champion."""


def search_settings(settings: TrainingSettings) -> TrainingSettings:
    """What a kind's search reads of `settings` (the rest at their defaults): as a cache key,
    it changes with the search's results and with nothing else."""
    searched = set(TrainingSettings.model_fields) - NOT_SEARCHED
    return TrainingSettings.model_construct(**settings.model_dump(include=searched))


def open_run(settings: TrainingSettings, source: str, source_fingerprint: str) -> str:
    """Creates the run's parent MLflow run and returns its id; it stays RUNNING for the kinds'
    runs (maybe in other processes) to nest under by id, until `conclude` finishes it."""
    configure(settings)
    experiment = mlflow.get_experiment_by_name(settings.experiment)
    assert experiment is not None  # configure() created it
    run = mlflow.MlflowClient(settings.tracking_uri()).create_run(
        experiment.experiment_id,
        run_name="training",
        tags={**run_tags(source_fingerprint), "kind": "training", "source": source},
    )
    return str(run.info.run_id)


def study_name(kind: ModelKind, settings: TrainingSettings, data_fingerprint: str) -> str:
    """Same kind, search settings and data -> same study, so a re-run after a crash resumes it."""
    budget = "pareto" if settings.multi_objective else f"{settings.latency_budget_ms:g}ms"
    mode = f"{settings.selection_metric}-{budget}"  # a study keeps one direction: its metric's
    return f"{kind.value}-{mode}-s{settings.seed}-v{SEARCH_SPACE_VERSION}-{data_fingerprint[:12]}"


def trial_inputs(
    kind: ModelKind, tfidf: Tfidf, train: pd.DataFrame, val: pd.DataFrame, seed: int
) -> TrialInputs:
    """What every trial of `kind` fits on: the feature matrices are computed once, not per trial."""
    y_train, y_val = labels_of(train), labels_of(val)
    if kind.needs_torch:
        return TrialInputs(
            lambda params: build_estimator(kind, params, tfidf, seed), train, y_train, val, y_val
        )
    features = FeatureMatrix(tfidf).fit(train)
    return TrialInputs(
        lambda params: Pipeline(build_learner(kind, params, tfidf, seed)),
        features.transform(train),
        y_train,
        features.transform(val),
        y_val,
    )


def search_kind(
    kind: ModelKind | str,
    train: pd.DataFrame,
    validation: pd.DataFrame,
    search_tfidf: Tfidf,
    final_tfidf: Tfidf,
    settings: TrainingSettings,
    out_dir: Path,
    parent_run_id: str | None = None,
) -> KindResult:
    """The study for `kind` on train/validation, then its candidate refit on train + validation
    (the transformer's: its best trial's model).

    With `parent_run_id` this logs a nested MLflow run for the kind (and one per trial).
    """
    kind = ModelKind.parse(kind)
    if not kind.searched:
        raise ValueError(f"the {kind.value} kind has no study: build it from searched kinds (build_ensemble)")
    started = time.perf_counter()
    data_fingerprint = fingerprint(train)
    name = study_name(kind, settings, data_fingerprint)
    tracked = parent_run_id is not None
    if tracked:
        configure(settings)
    run = (
        mlflow.start_run(run_name=f"kind-{kind.value}", parent_run_id=parent_run_id, nested=True)
        if tracked
        else nullcontext()
    )
    with run as active:
        if tracked:
            mlflow.set_tags({**run_tags(data_fingerprint), "kind": kind.value, "study": name})
        inputs = trial_inputs(kind, search_tfidf, train, validation, settings.seed)
        callbacks = [trial_logger(kind.value, data_fingerprint, settings.selection_metric)] if tracked else []
        outcome = run_study(kind, inputs, settings, name, callbacks)
        validation_metrics = {k: float(v) for k, v in outcome.best.user_attrs["val_metrics"].items()}
        if kind.needs_torch:
            from libs.models.transformer import DistilBertClassifier  # torch only for this kind

            fitted_on = train
            estimator = DistilBertClassifier.load(trial_model_folder(settings, name, outcome.best.number))
        else:
            fitted_on = pd.concat([train, validation], ignore_index=True)
            estimator = build_estimator(kind, outcome.params, final_tfidf, seed=settings.seed)
            estimator.fit(fitted_on, labels_of(fitted_on))
        run_id = active.info.run_id if active is not None else None
        # On the best trial's validation probabilities: its model never saw those reviews.
        val_proba = np.asarray(outcome.best.user_attrs["val_proba"], dtype=np.float64)
        calibrated = choose_calibration(val_proba, labels_of(validation), seed=settings.seed)
        candidate = ModelBundle.new(
            kind,
            estimator,
            final_tfidf,  # the transformer does not read it; drift monitoring does (coverage)
            fingerprint(fitted_on),
            metrics={f"val_{key}": value for key, value in validation_metrics.items()} | calibrated.metrics(),
            mlflow_run_id=run_id,
            calibration=calibrated.calibration,
        )
        onnx_check = None
        if kind.needs_torch:  # its int8 export serves only if validation macro-F1 stays within 0.005
            from libs.models.onnx_export import LabelledCheck

            onnx_check = LabelledCheck(
                validation[TEXT_COLUMN].astype(str).tolist(),
                labels_of(validation).tolist(),
                val_proba,  # the candidate's own, from its trial
            )
        path = save_bundle(candidate, out_dir / kind.value, onnx_check=onnx_check)
        latency, feasible = float(outcome.best.user_attrs["latency_ms"]), outcome.feasible
        if kind.needs_torch:
            latency = served_latency_ms(path, validation)
            feasible = latency <= settings.latency_budget_ms
        if tracked:
            mlflow.log_params({f"best_{key}": value for key, value in outcome.params.items()})
            mlflow.log_params(
                {"calibration": calibrated.calibration.method, "selection_metric": settings.selection_metric}
            )
            mlflow.log_metrics({**candidate.metrics, "latency_ms": latency})
            mlflow.log_artifacts(str(path), CANDIDATE_ARTIFACT)
    logger.info(
        "%s: val %s %.4f, %.2f ms per review, params %s",
        kind.value,
        settings.selection_metric,
        validation_metrics[settings.selection_metric],
        latency,
        outcome.params,
    )
    return KindResult(
        kind=kind.value,
        params=outcome.params,
        validation=validation_metrics,
        latency_ms=latency,
        trials=finished_trials(outcome.study),
        feasible=feasible,
        study=name,
        seconds=time.perf_counter() - started,
        bundle=path,
        run_id=run_id,
        val_proba=outcome.best.user_attrs["val_proba"],
    )


def served_latency_ms(bundle: Path, validation: pd.DataFrame) -> float:
    """p50 milliseconds of one validation review scored by the saved bundle, as the service
    loads it. For the transformer that is its ONNX export on ONNX Runtime's serving threads
    (`KINDLE_ONNX_THREADS`), not the torch model its trials timed: the latency budget judges
    what would serve (at 256 tokens torch took 56 ms a review, over the 50 ms default)."""
    served = load_bundle(bundle)
    return latency_ms(lambda i: served.predict_features(validation.iloc[i : i + 1]), len(validation))["p50"]


def select_champion(results: Sequence[KindResult], metric: SelectionMetric) -> KindResult:
    """Best validation score of `metric` among kinds within the latency budget (all, if none is).

    Scores are compared at 4 decimals: differences below that are noise on a validation
    split of hundreds of reviews, and the faster model wins the tie.
    """
    if not results:
        raise ValueError("no trained kinds to choose a champion from")
    pool = [result for result in results if result.feasible] or list(results)
    return max(pool, key=lambda r: (round(metric.oriented(r.val_score(metric)), 4), -r.latency_ms))


def drift_reference(bundle: ModelBundle, reference: pd.DataFrame, test: pd.DataFrame) -> ReferenceProfile:
    """Numeric features and texts of the natural star mix; predicted-label shares and coverage on
    held-out rows."""
    predicted = [LABELS[i] for i in bundle.predict_features(test).argmax(axis=1)]
    coverage = bundle.tfidf.coverage(test[CLEAN_COLUMN].tolist()) if bundle.tfidf is not None else None
    return ReferenceProfile.build(
        reference[CONTRACT.numeric_names], predicted, coverage, texts=reference[CLEAN_COLUMN].tolist()
    )


def finish_bundle(
    champion: KindResult,
    test: pd.DataFrame,
    reference: pd.DataFrame,
    out_dir: Path,
    run_id: str | None = None,
) -> Finished:
    """The champion's test report and drift reference, and its final bundle, written once."""
    candidate = load_bundle(champion.bundle)
    report = evaluate(
        candidate.estimator,
        test,
        labels_of(test),
        out_dir / "reports",
        split="test",
        size_bytes=model_bytes(champion.bundle),
        calibration=candidate.calibration,
    )
    final = dataclasses.replace(
        candidate,
        metrics={**candidate.metrics, **{f"test_{key}": value for key, value in report.metrics.items()}},
        drift_reference=drift_reference(candidate, reference, test),
        mlflow_run_id=run_id or candidate.mlflow_run_id,
    )
    path = save_bundle(final, out_dir / "bundle", model_files_from=champion.bundle)
    (out_dir / "reports" / "test_report.json").write_text(
        json.dumps({"report": report.report, "confusion": report.confusion})
    )
    return Finished(
        champion.kind, path, dict(report.metrics), [*report.files, out_dir / "reports" / "test_report.json"]
    )


def decide(
    challenger: Path,
    champion: Path | None,
    evaluation: pd.DataFrame,
    margin: float,
    champion_version: str | None = None,
    frozen: pd.DataFrame | None = None,
    *,
    metric: SelectionMetric,
) -> Decision:
    """Scores both bundles by `metric` on `evaluation` and on the lineage's `frozen` set (when
    there is one); the challenger wins unless it is worse by more than `margin` (in the
    metric's units, whichever way is better) on either.

    `evaluation` is this run's test split, which may hold production feedback; the frozen set
    never does, so feedback that lies cannot grade its own challenger into promotion.
    A challenger that is the champion's very model (same estimator and vocabulary) is not
    registered again: re-running a pipeline on unchanged data changes nothing.
    """
    ours_bundle = load_bundle(challenger)

    def score(bundle: ModelBundle, reviews: pd.DataFrame) -> float:
        return selection_score(metric, labels_of(reviews), bundle.predict_features(reviews))

    def worse(ours: float, theirs: float) -> bool:
        return metric.oriented(ours) < metric.oriented(theirs) - margin

    ours = score(ours_bundle, evaluation)
    rows = len(evaluation)
    if champion is None:
        reason = f"promoted: no champion yet (challenger {metric} {ours:.4f} on {rows} evaluation reviews)"
        return Decision(True, reason, metric, ours, None, None, rows)
    theirs_bundle = load_bundle(champion)
    theirs = score(theirs_bundle, evaluation)
    if model_digest(challenger) == model_digest(champion):
        reason = f"unchanged: the champion v{champion_version} is this very model"
        return Decision(False, reason, metric, ours, theirs, champion_version, rows)
    scores = (
        f"challenger {metric} {ours:.4f} vs champion v{champion_version} {theirs:.4f} "
        f"on {rows} evaluation reviews"
    )
    rejected = worse(ours, theirs)
    on_frozen: tuple[float | None, float | None] = (None, None)
    if frozen is not None and len(frozen):
        ours_frozen, theirs_frozen = score(ours_bundle, frozen), score(theirs_bundle, frozen)
        scores += f", {ours_frozen:.4f} vs {theirs_frozen:.4f} on {len(frozen)} frozen reviews"
        rejected = rejected or worse(ours_frozen, theirs_frozen)
        on_frozen = (ours_frozen, theirs_frozen)
    reason = (
        f"{'rejected' if rejected else 'promoted'}: {scores} (margin {margin:g}, {metric.better} is better)"
    )
    return Decision(
        not rejected,
        reason,
        metric,
        ours,
        theirs,
        champion_version,
        rows,
        *on_frozen,
        len(frozen) if frozen is not None else 0,
    )


FEEDBACK_TAG = "feedback_until"
"""Tag of the registered model (and of each promoted version): the time of the newest
labelled feedback a challenger was trained on, promoted or not. Feedback up to it has
been tried; only newer feedback is a reason to train another challenger."""


def publish(
    finished: Finished,
    decision: Decision,
    settings: TrainingSettings,
    run_id: str | None,
    feedback_until: str = "",
    frozen_reviews: pd.DataFrame | None = None,
) -> str | None:
    """Registers and promotes a challenger the decision promotes; returns its version (None if
    it was not). Either way the registered model records the feedback this challenger saw.

    The model's first registration freezes `frozen_reviews` (raw test reviews, none from
    feedback) as the lineage's frozen evaluation set; each version is tagged with the run
    that holds it."""
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri(), registry_uri=settings.tracking_uri())
    version = None
    if decision.promote:
        registered = register(finished.bundle, settings, run_id)
        version = str(registered.version)
        client.set_model_version_tag(settings.model_name, version, FEEDBACK_TAG, feedback_until)
        if frozen_reviews is not None:
            frozen = freeze(settings, str(registered.run_id), frozen_reviews)
            if frozen:
                logger.info("froze %d test reviews as the evaluation set of %s", frozen, settings.model_name)
        client.set_model_version_tag(settings.model_name, version, FROZEN_TAG, frozen_run(settings) or "")
        promote(version, settings)
    else:
        logger.info("challenger not promoted: %s", decision.reason)
    model_exists = version is not None or decision.champion_version is not None
    if model_exists and feedback_until:
        client.set_registered_model_tag(settings.model_name, FEEDBACK_TAG, feedback_until)
    return version


def decision_metrics(decision: Decision) -> dict[str, float]:
    """The decision's scores as MLflow metrics named by its metric (`challenger_macro_f1`,
    `frozen_champion_mae_stars`, ...); the scores it did not compute are left out."""
    scores = {
        "challenger": decision.challenger_score,
        "champion": decision.champion_score,
        "frozen_challenger": decision.frozen_challenger_score,
        "frozen_champion": decision.frozen_champion_score,
    }
    return {f"{name}_{decision.metric}": score for name, score in scores.items() if score is not None}


def conclude(
    results: Sequence[KindResult],
    test: pd.DataFrame,
    reference: pd.DataFrame,
    settings: TrainingSettings,
    run_id: str,
    out_dir: Path,
    data_stats: dict[str, Any],
    feedback_until: str = "",
    frozen_reviews: pd.DataFrame | None = None,
) -> Concluded:
    """Selects the champion, finishes its bundle in `out_dir`, scores it against the serving
    champion on the same test split and on the lineage's frozen set, and publishes it as
    decided (`frozen_reviews`: the raw test reviews not from feedback, frozen at the model's
    first registration); the parent run `run_id` records each kind's outcome, the
    champion's test report, the decision and `data_stats`."""
    configure(settings)
    metric = settings.selection_metric
    finished = finish_bundle(select_champion(results, metric), test, reference, out_dir, run_id)
    serving = current_champion(settings, out_dir / "serving")
    decision = decide(
        finished.bundle,
        serving[1] if serving else None,
        test,
        settings.promotion_margin,
        str(serving[0].version) if serving else None,
        load_frozen_set(settings, out_dir / "frozen") if serving else None,
        metric=metric,
    )
    with mlflow.start_run(run_id=run_id):
        best = {f"{r.kind}.best_params": json.dumps(r.params, sort_keys=True, default=str) for r in results}
        kinds = ",".join(r.kind for r in results)
        mlflow.log_params(
            {
                "champion_kind": finished.kind,
                "kinds": kinds,
                "selection_metric": metric,
                **{k: v[:500] for k, v in best.items()},
            }
        )
        metrics = {f"test_{k}": v for k, v in finished.test.items()}
        metrics |= {f"{r.kind}.val_{k}": v for r in results for k, v in r.validation.items()}
        metrics |= decision_metrics(decision)
        mlflow.log_metrics(metrics)
        mlflow.set_tags({"decision": decision.reason, "promoted": str(decision.promote).lower()})
        for path in finished.report_files:
            mlflow.log_artifact(str(path), "reports")
        mlflow.log_text(json.dumps(data_stats, indent=1), "data/etl_stats.json")
        version = publish(finished, decision, settings, run_id, feedback_until, frozen_reviews)
    return Concluded(finished, decision, version)
