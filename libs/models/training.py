"""Training entry points used by the Flyte workflow: tune and fit each kind, pick, evaluate, register.

Frames in are `compute_features` output plus the `overall` label; the Tfidf comes in
fitted on the training split only, so validation and test never leak into the vocabulary.
Selection uses validation macro-F1 only; test metrics are reported, never used to choose.
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from libs.features import CONTRACT, Tfidf
from libs.models.bundle import ModelBundle, library_versions, new_version, save_bundle
from libs.models.data import fingerprint, labels_of
from libs.models.estimators import build_estimator
from libs.models.evaluation import Evaluation, evaluate
from libs.models.kinds import ModelKind
from libs.models.settings import TrainingSettings
from libs.models.tracking import configure, register_champion, run_tags, trial_logger
from libs.models.tuning import TrialInputs, finished_trials, run_study

logger = logging.getLogger("kindle.models.training")


@dataclass
class TrainedKind:
    kind: ModelKind
    estimator: Any  # refitted on the training split with the best trial's hyperparameters
    params: dict[str, Any]
    validation: Evaluation
    study_name: str
    trials: int  # finished trials in the study (resumed ones included)
    feasible: bool  # within the latency budget
    mlflow_run_id: str | None = None

    @property
    def val_macro_f1(self) -> float:
        return self.validation.metrics["macro_f1"]

    @property
    def latency_ms(self) -> float:
        return self.validation.metrics["latency_p50_ms"]


@dataclass
class TrainingOutcome:
    champion: TrainedKind
    results: list[TrainedKind]
    test: Evaluation
    bundle_path: Path
    registered_version: str | None
    mlflow_run_id: str | None
    metrics: dict[str, float] = field(default_factory=dict)


def trial_inputs(
    kind: ModelKind, tfidf: Tfidf, train_df: pd.DataFrame, val_df: pd.DataFrame, seed: int
) -> TrialInputs:
    """What every trial of `kind` fits on; the feature matrices are computed once, not per trial."""
    y_train, y_val = labels_of(train_df), labels_of(val_df)
    if kind is ModelKind.DISTILBERT:
        return TrialInputs(
            lambda params: build_estimator(kind, params, tfidf, seed=seed), train_df, y_train, val_df, y_val
        )
    features = build_estimator(kind, _any_params(kind), tfidf, seed=seed).steps[0][1].fit(train_df)
    X_train, X_val = features.transform(train_df), features.transform(val_df)
    return TrialInputs(
        lambda params: build_estimator(kind, params, tfidf, seed=seed)[1:], X_train, y_train, X_val, y_val
    )


def _any_params(kind: ModelKind) -> dict[str, Any]:
    """Hyperparameters only to build the shared feature step (which does not depend on them)."""
    return {
        ModelKind.LOGREG: {"C": 1.0},
        ModelKind.RF: {"n_components": 2, "n_estimators": 1, "max_features": "sqrt", "min_samples_leaf": 1},
        ModelKind.HIST_GB: {
            "n_components": 2,
            "max_iter": 1,
            "learning_rate": 0.1,
            "max_leaf_nodes": 7,
            "l2_regularization": 0.0,
        },
        ModelKind.MLP: {"hidden": 1, "alpha": 0.0, "learning_rate": 0.001, "epochs": 1},
    }[kind]


def study_name(kind: ModelKind, settings: TrainingSettings, data_fingerprint: str) -> str:
    """Same kind, mode and data -> same study, so a rerun after a crash resumes it."""
    mode = "pareto" if settings.multi_objective else "f1"
    return f"{kind.value}-{mode}-{data_fingerprint[:12]}"


def train_kind(
    kind: ModelKind | str,
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    settings: TrainingSettings,
    tfidf: Tfidf,
) -> TrainedKind:
    """Optuna study for `kind`, then the final fit with the picked trial's hyperparameters.

    Inside an active MLflow run this logs a nested run for the kind with one nested run per trial.
    """
    kind = ModelKind.parse(kind)
    data_fingerprint = fingerprint(train_df)
    name = study_name(kind, settings, data_fingerprint)
    tracked = mlflow.active_run() is not None
    run = mlflow.start_run(run_name=f"kind-{kind.value}", nested=True) if tracked else nullcontext()
    with run as active:
        if tracked:
            mlflow.set_tags({**run_tags(data_fingerprint), "kind": kind.value, "study": name})
        inputs = trial_inputs(kind, tfidf, train_df, val_df, settings.seed)
        callbacks = [trial_logger(kind.value, data_fingerprint)] if tracked else []
        outcome = run_study(kind, inputs, settings, name, callbacks)
        estimator = build_estimator(kind, outcome.params, tfidf, seed=settings.seed)
        estimator.fit(train_df, labels_of(train_df))
        out_dir = settings.output_dir / "reports" / kind.value
        validation = evaluate(estimator, val_df, labels_of(val_df), out_dir, split="val")
        logger.info(
            "%s: val macro-F1 %.4f, %.1f ms per review, params %s",
            kind.value,
            validation.metrics["macro_f1"],
            validation.metrics["latency_p50_ms"],
            outcome.params,
        )
        if tracked:
            mlflow.log_params({f"best_{key}": value for key, value in outcome.params.items()})
            mlflow.log_metrics({f"val_{key}": value for key, value in validation.metrics.items()})
            for file in validation.files:
                mlflow.log_artifact(str(file), artifact_path="val")
        return TrainedKind(
            kind=kind,
            estimator=estimator,
            params=outcome.params,
            validation=validation,
            study_name=name,
            trials=finished_trials(outcome.study),
            feasible=outcome.feasible,
            mlflow_run_id=active.info.run_id if tracked else None,
        )


def select_champion(results: list[TrainedKind]) -> TrainedKind:
    """Highest validation macro-F1 among kinds within the latency budget (all, if none is).

    Macro-F1 is compared at 4 decimals: differences below that are noise on a validation
    split of hundreds of reviews, and the faster model wins the tie.
    """
    if not results:
        raise ValueError("no trained kinds to choose a champion from")
    pool = [result for result in results if result.feasible] or results
    return max(pool, key=lambda r: (round(r.val_macro_f1, 4), -r.latency_ms))


def train_and_register(
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    test_df: pd.DataFrame,
    tfidf: Tfidf,
    settings: TrainingSettings,
    drift_reference: dict | None = None,
    register: bool = True,
) -> TrainingOutcome:
    """The whole training: one parent MLflow run, every kind, the champion, its bundle and registration."""
    configure(settings)
    data_fingerprint = fingerprint(train_df)
    with mlflow.start_run(run_name="training") as parent:
        mlflow.set_tags(run_tags(data_fingerprint))
        mlflow.log_params(
            {
                "kinds": ",".join(kind.value for kind in settings.kinds),
                "n_trials": settings.n_trials,
                "timeout_s": settings.timeout_s,
                "seed": settings.seed,
                "max_latency_ms": settings.max_latency_ms,
                "multi_objective": settings.multi_objective,
                "train_rows": len(train_df),
                "val_rows": len(val_df),
                "test_rows": len(test_df),
            }
        )
        results = [train_kind(kind, train_df, val_df, settings, tfidf) for kind in settings.kinds]
        champion = select_champion(results)
        test = evaluate(
            champion.estimator,
            test_df,
            labels_of(test_df),
            settings.output_dir / "reports" / "champion",
            "test",
        )
        metrics = {f"val_{k}": v for k, v in champion.validation.metrics.items()}
        metrics.update({f"test_{k}": v for k, v in test.metrics.items()})
        mlflow.log_metrics(metrics)
        mlflow.set_tag("champion_kind", champion.kind.value)
        for file in test.files:
            mlflow.log_artifact(str(file), artifact_path="test")
        mlflow.log_text(json.dumps(test.report, indent=2), "test/classification_report.json")
        version = new_version(data_fingerprint, champion.kind)
        bundle = ModelBundle(
            kind=champion.kind.value,
            version=version,
            labels=list(champion.estimator.classes_),
            estimator=champion.estimator,
            tfidf=tfidf,
            metrics=metrics,
            data_fingerprint=data_fingerprint,
            contract_hash=CONTRACT.hash,
            library_versions=library_versions(champion.kind),
            drift_reference=drift_reference,
            mlflow_run_id=parent.info.run_id,
        )
        bundle_path = save_bundle(bundle, settings.output_dir / "bundles" / version)
        registered = register_champion(bundle_path, settings, parent.info.run_id) if register else None
    return TrainingOutcome(
        champion=champion,
        results=results,
        test=test,
        bundle_path=bundle_path,
        registered_version=str(registered.version) if registered else None,
        mlflow_run_id=parent.info.run_id,
        metrics=metrics,
    )
