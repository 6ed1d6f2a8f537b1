"""Optuna HPO of one model kind: TPE with a fixed seed, median pruning, a resumable study.

The study lives in SQL storage (one SQLite file per study under the output folder by default), is loaded
with `load_if_exists=True`, and the budget counts trials already finished there, so a
crashed search resumes and runs only the trials it still owes.

Objective: the validation score of the selection metric (`TrainingSettings.selection_metric`,
macro-F1 by default; the study maximises it, or minimises it for MAE). Every trial also
records its validation metrics and probabilities (the ensemble's weight is chosen on them),
its per-sample latency (p50, ms, the model part on precomputed features: what differs
between trials) and the serialised model size as user attributes. Two modes
(TrainingSettings.multi_objective):
- single objective: the best score; trials slower than `latency_budget_ms` are infeasible
  (TPE's constraint, and `pick_best` never chooses them unless nothing is feasible); trials
  within `selection_tolerance` of the best are a tie (differences a validation split of
  hundreds of reviews cannot tell apart), won by the learner's defaults when they are
  among them (`starting_points`), else by the best score;
- multi-objective: (the score, latency down); `pick_best` takes, among the Pareto
  trials, the best score within the latency budget, else the fastest Pareto trial.
Pruning needs intermediate values, which Optuna allows only for single-objective studies.

A transformer trial also keeps its fitted model (`trial_model_folder`): minutes of
fine-tuning on a CPU are not repeated, the best trial's model is the candidate.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from libs.models.kinds import ModelKind
from libs.models.training.estimators import fit_in_stages
from libs.models.training.evaluation import (
    classification_metrics,
    latency_ms,
    model_size_bytes,
    selection_score,
)
from libs.models.training.selection import SelectionMetric
from libs.models.training.settings import TrainingSettings
from libs.models.training.spaces import starting_points, suggest

logger = logging.getLogger("kindle.models.tuning")

PRUNER_STARTUP_TRIALS = 3
"""Completed trials the median pruner needs before it compares a trial with them."""
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
"""Trials that count against the budget; failed or crashed (still RUNNING) ones are redone."""


@dataclass
class TrialInputs:
    """What a trial fits on: `X` already through the steps every trial shares (e.g. TF-IDF).

    `build(params)` returns the part of the estimator that a trial fits on `X`.
    """

    build: Callable[[dict[str, Any]], Any]
    X_train: Any
    y_train: Any
    X_val: Any
    y_val: Any


@dataclass
class StudyOutcome:
    study: optuna.Study
    best: FrozenTrial
    params: dict[str, Any]
    feasible: bool  # the best trial meets the latency budget


def create_study(kind: ModelKind, settings: TrainingSettings, name: str) -> optuna.Study:
    """The study, in the selection metric's direction (the median pruner follows it)."""
    direction = settings.selection_metric.direction
    if settings.multi_objective:  # latency is an objective here, not a constraint
        return optuna.create_study(
            study_name=name,
            storage=settings.storage_url(name),
            sampler=optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=5),
            directions=[direction, "minimize"],
            load_if_exists=True,
        )
    return optuna.create_study(
        study_name=name,
        storage=settings.storage_url(name),
        sampler=optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=5),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=1),
        direction=direction,
        load_if_exists=True,
    )


def can_prune(study: optuna.Study) -> bool:
    """Whether the median pruner may stop a trial: only once `PRUNER_STARTUP_TRIALS` completed."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) >= PRUNER_STARTUP_TRIALS


def trial_model_folder(settings: TrainingSettings, study: str, number: int) -> Path:
    """Where trial `number` of a transformer study keeps its fitted model (beside the study's
    storage, so a resumed study finds it)."""
    return settings.output_dir.resolve() / "optuna" / study / f"trial-{number}"


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def objective(
    kind: ModelKind, inputs: TrialInputs, settings: TrainingSettings
) -> Callable[[optuna.Trial], float | tuple[float, float]]:
    metric = settings.selection_metric

    def run(trial: optuna.Trial) -> float | tuple[float, float]:
        params = suggest(kind, trial, settings)
        trial.set_user_attr("params", params)
        model = inputs.build(params)
        scored = False
        for step in fit_in_stages(model, inputs.X_train, inputs.y_train):
            # Intermediate scores only where the pruner can use them: scoring validation after
            # every epoch costs a transformer minutes on a CPU.
            scored = not settings.multi_objective and can_prune(trial.study)
            if scored:
                proba = model.predict_proba(inputs.X_val)
                score = selection_score(metric, inputs.y_val, proba)
                trial.report(score, step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"{metric} {score:.4f} worse than the median at step {step}")
        if not scored:
            proba = model.predict_proba(inputs.X_val)
            score = selection_score(metric, inputs.y_val, proba)
        trial.set_user_attr("val_metrics", classification_metrics(inputs.y_val, proba))
        trial.set_user_attr("val_proba", np.round(proba, 6).tolist())
        if kind.needs_torch:
            model.save(trial_model_folder(settings, trial.study.study_name, trial.number))
        latency = latency_ms(lambda i: model.predict_proba(inputs.X_val[i : i + 1]), len(inputs.y_val))
        trial.set_user_attr("latency_ms", latency["p50"])
        trial.set_user_attr("latency_p95_ms", latency["p95"])
        trial.set_user_attr("size_bytes", model_size_bytes(model))
        if settings.multi_objective:
            return score, latency["p50"]
        trial.set_constraint("latency", latency["p50"] - settings.latency_budget_ms)  # > 0: infeasible
        return score

    return run


def progress_logger(
    kind: ModelKind, n_trials: int, metric: SelectionMetric
) -> Callable[[optuna.Study, FrozenTrial], None]:
    """One log line per finished trial: trial n/N, its value, the best so far."""

    def log(study: optuna.Study, trial: FrozenTrial) -> None:
        done = finished_trials(study)
        value = "pruned" if trial.state is TrialState.PRUNED else _format(trial.values)
        best = _best_value(study, metric)
        logger.info("%s trial %d/%d: %s (best so far %s)", kind.value, done, n_trials, value, best)

    return log


def time_budget(
    seconds: float, clock: Callable[[], float] = time.monotonic
) -> Callable[[optuna.Study, FrozenTrial], None]:
    """Stops the search once the next trial would likely end past `seconds` from now: when
    the time spent plus the mean trial's time so far exceeds it. A plain timeout only
    refuses to start trials after the budget, so a trial started just before it (minutes
    for a transformer) overran it by a whole trial. The first trial always runs."""
    started = clock()
    finished = 0

    def stop_when_next_would_overrun(study: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal finished
        finished += 1
        spent = clock() - started
        if spent + spent / finished > seconds:
            study.stop()

    return stop_when_next_would_overrun


def _format(values: Sequence[float] | None) -> str:
    return "none" if not values else ", ".join(f"{v:.4f}" for v in values)


def _best_value(study: optuna.Study, metric: SelectionMetric) -> str:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return f"{metric.best(t.values[0] for t in complete):.4f}" if complete else "none"


def run_study(
    kind: ModelKind,
    inputs: TrialInputs,
    settings: TrainingSettings,
    name: str,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
) -> StudyOutcome:
    """Runs what is left of the study's budget: `trials` minus trials already finished, within
    `timeout_s` (`time_budget`)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own progress line replaces Optuna's
    study = create_study(kind, settings, name)
    if not study.get_trials(deepcopy=False):  # a new study: its starting points first
        for params in starting_points(kind, settings)[: settings.trials]:
            study.enqueue_trial(params)
    remaining = settings.trials - finished_trials(study)
    if remaining > 0:
        logger.info("%s: study %s, %d of %d trials to run", kind.value, name, remaining, settings.trials)
        budget = [time_budget(settings.timeout_s)] if settings.timeout_s else []
        study.optimize(
            objective(kind, inputs, settings),
            n_trials=remaining,
            callbacks=[
                progress_logger(kind, settings.trials, settings.selection_metric),
                *budget,
                *callbacks,
            ],
            gc_after_trial=True,
        )
    best, feasible = pick_best(kind, study, settings)
    if kind.needs_torch:  # only the best trial's model is ever used again
        for trial in study.get_trials(deepcopy=False):
            if trial.number != best.number:
                shutil.rmtree(trial_model_folder(settings, name, trial.number), ignore_errors=True)
    return StudyOutcome(study, best, dict(best.user_attrs["params"]), feasible)


def _default_rank(kind: ModelKind, trial: FrozenTrial, settings: TrainingSettings) -> int:
    """How strongly a tie prefers `trial`: the first starting point most, sampled trials least."""
    defaults = starting_points(kind, settings)
    params = trial.user_attrs["params"]
    for rank, default in enumerate(defaults):
        if all(params.get(key) == value for key, value in default.items()):
            return len(defaults) - rank
    return 0


def pick_best(kind: ModelKind, study: optuna.Study, settings: TrainingSettings) -> tuple[FrozenTrial, bool]:
    """The trial to refit: see the module docstring for the rule of each mode."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise RuntimeError(
            f"study {study.study_name} has no completed trial (all pruned, failed or out of time): "
            "raise trials or timeout_s"
        )

    def within(trial: FrozenTrial) -> bool:
        return trial.user_attrs["latency_ms"] <= settings.latency_budget_ms

    def score(trial: FrozenTrial) -> float:  # more is better, whichever the metric's direction
        return settings.selection_metric.oriented(trial.values[0])

    candidates = study.best_trials if settings.multi_objective else complete
    feasible = [trial for trial in candidates if within(trial)]
    if feasible:
        if settings.multi_objective:
            return max(feasible, key=lambda t: (score(t), -t.user_attrs["latency_ms"])), True
        best = max(score(trial) for trial in feasible)
        tied = [trial for trial in feasible if score(trial) >= best - settings.selection_tolerance]
        return max(tied, key=lambda t: (_default_rank(kind, t, settings), score(t))), True
    fastest = min(candidates, key=lambda t: t.user_attrs["latency_ms"])
    logger.warning(
        "study %s: no trial within %.1f ms per sample; taking the fastest (%.1f ms)",
        study.study_name,
        settings.latency_budget_ms,
        fastest.user_attrs["latency_ms"],
    )
    return fastest, False
