"""The ensemble kind: a soft vote of the transformer and the best TF-IDF kind.

The transformer reads words in context; the TF-IDF kinds read term counts and the numeric
signals (length, punctuation, shouting). Their mistakes differ, so averaging their
probabilities scores better than either alone. Built after the searched kinds, from their
candidates, with no training of its own:

- the TF-IDF member is the searched TF-IDF kind that `select_champion` would choose among
  them (best validation score of the selection metric within the latency budget);
- the weight on the transformer is the one of `WEIGHTS` with the best score of the
  selection metric on the validation split, from both members' out-of-sample validation
  probabilities (the transformer's best trial and the TF-IDF kind's best trial were
  fitted on train only); ties go to the weight nearest an even vote;
- the bundle copies both members' model files byte for byte, plus the weight.

Its validation score is that of the chosen weight: one number tuned on the same rows it is
reported on, an optimism of the order of the differences between neighbouring weights.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from libs.models.bundle import ModelBundle, load_bundle, save_bundle
from libs.models.components import SoftVote, blend
from libs.models.kinds import SKLEARN_KINDS, ModelKind
from libs.models.training.calibration import choose_calibration
from libs.models.training.data import labels_of
from libs.models.training.evaluation import classification_metrics, selection_score
from libs.models.training.selection import SelectionMetric
from libs.models.training.settings import TrainingSettings
from libs.models.training.stages import CANDIDATE_ARTIFACT, KindResult, select_champion
from libs.models.training.tracking import configure, run_tags

logger = logging.getLogger("kindle.models.ensemble")

WEIGHTS: tuple[float, ...] = tuple(round(step / 20, 2) for step in range(21))
"""The transformer's weights tried: 0 (the TF-IDF kind alone) to 1 (the transformer alone)."""


def choose_weight(
    truth: np.ndarray, transformer: np.ndarray, tfidf_model: np.ndarray, metric: SelectionMetric
) -> float:
    """The weight of `WEIGHTS` whose soft vote has the best validation score of `metric`, at 4
    decimals (ties: the one nearest 0.5, since an even vote leans least on the validation rows)."""

    def score(weight: float) -> float:
        return metric.oriented(selection_score(metric, truth, blend(transformer, tfidf_model, weight)))

    scores = {weight: round(score(weight), 4) for weight in WEIGHTS}
    return max(WEIGHTS, key=lambda weight: (scores[weight], -abs(weight - 0.5)))


def members(results: Sequence[KindResult], metric: SelectionMetric) -> tuple[KindResult, KindResult]:
    """The transformer's result and the TF-IDF kind the ensemble votes it with."""
    transformers = [result for result in results if result.kind == ModelKind.DISTILBERT.value]
    tfidf_kinds = [result for result in results if ModelKind.parse(result.kind) in SKLEARN_KINDS]
    if not transformers or not tfidf_kinds:
        raise ValueError("the ensemble needs the transformer's result and at least one TF-IDF kind's")
    return transformers[0], select_champion(tfidf_kinds, metric)


def build_ensemble(
    results: Sequence[KindResult],
    validation: pd.DataFrame,
    settings: TrainingSettings,
    out_dir: Path,
    parent_run_id: str | None = None,
) -> KindResult:
    """The ensemble's candidate bundle in `out_dir / "ensemble"`, and its result beside the others.

    With `parent_run_id` it logs a nested MLflow run, like a searched kind.
    """
    started = time.perf_counter()
    metric = settings.selection_metric
    transformer, tfidf_kind = members(results, metric)
    truth = labels_of(validation)
    probabilities = [np.asarray(member.val_proba, dtype=np.float64) for member in (transformer, tfidf_kind)]
    if any(proba.shape != (len(truth), 5) for proba in probabilities):
        raise ValueError("the members' validation probabilities do not match the validation split")
    transformer_proba, tfidf_proba = probabilities
    weight = choose_weight(truth, transformer_proba, tfidf_proba, metric)
    proba = blend(transformer_proba, tfidf_proba, weight)
    validation_metrics = classification_metrics(truth, proba)
    calibrated = choose_calibration(proba, truth, seed=settings.seed)  # members fitted on train alone
    transformer_bundle, tfidf_bundle = load_bundle(transformer.bundle), load_bundle(tfidf_kind.bundle)
    latency = transformer.latency_ms + tfidf_kind.latency_ms
    params = {"weight": weight, "tfidf_kind": tfidf_kind.kind}
    tracked = parent_run_id is not None
    if tracked:
        configure(settings)
    run = (
        mlflow.start_run(run_name="kind-ensemble", parent_run_id=parent_run_id, nested=True)
        if tracked
        else nullcontext()
    )
    with run as active:
        run_id = active.info.run_id if active is not None else None
        candidate = ModelBundle.new(
            ModelKind.ENSEMBLE,
            SoftVote(transformer_bundle.estimator, tfidf_bundle.estimator, weight),
            tfidf_bundle.tfidf,
            tfidf_bundle.data_fingerprint,
            metrics={f"val_{key}": value for key, value in validation_metrics.items()} | calibrated.metrics(),
            mlflow_run_id=run_id,
            calibration=calibrated.calibration,
        )
        path = save_bundle(
            candidate,
            out_dir / ModelKind.ENSEMBLE.value,
            model_files_from=[transformer.bundle, tfidf_kind.bundle],
        )
        if tracked:
            mlflow.set_tags({**run_tags(tfidf_bundle.data_fingerprint), "kind": ModelKind.ENSEMBLE.value})
            mlflow.log_params({f"best_{key}": value for key, value in params.items()})
            mlflow.log_params({"calibration": calibrated.calibration.method, "selection_metric": metric})
            mlflow.log_metrics({**candidate.metrics, "latency_ms": latency})
            mlflow.log_artifacts(str(path), CANDIDATE_ARTIFACT)
    logger.info(
        "ensemble: %.2f x transformer + %.2f x %s, val %s %.4f",
        weight,
        1 - weight,
        tfidf_kind.kind,
        metric,
        validation_metrics[metric],
    )
    return KindResult(
        kind=ModelKind.ENSEMBLE.value,
        params=params,
        validation=validation_metrics,
        latency_ms=latency,
        trials=0,
        feasible=latency <= settings.latency_budget_ms,
        study="",
        seconds=time.perf_counter() - started,
        bundle=path,
        run_id=run_id,
        val_proba=np.round(proba, 6).tolist(),
    )
