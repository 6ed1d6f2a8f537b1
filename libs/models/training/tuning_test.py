"""HPO: a resumable study, latency and size per trial, the pick of each mode, progress lines."""

import logging
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from libs.features import Tfidf
from libs.models.kinds import ModelKind
from libs.models.training.estimators import STAGES
from libs.models.training.settings import TrainingSettings
from libs.models.training.stages import trial_inputs
from libs.models.training.tuning import (
    PRUNER_STARTUP_TRIALS,
    StudyOutcome,
    TrialInputs,
    finished_trials,
    run_study,
    time_budget,
)


@pytest.fixture(scope="module")
def inputs(train_df: pd.DataFrame, val_df: pd.DataFrame, tfidf: Tfidf) -> TrialInputs:
    return trial_inputs(ModelKind.LOGREG, tfidf, train_df, val_df, seed=0)


def settings(tmp_path: Path, **changes: object) -> TrainingSettings:
    values: dict = {"kinds": (ModelKind.LOGREG,), "trials": 4, "timeout_s": 120, "output_dir": tmp_path}
    return TrainingSettings(**{**values, **changes})


def crash_after(k: int):
    """A real interruption (Ctrl-C) as the k-th trial finishes."""

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        if finished_trials(study) == k:
            raise KeyboardInterrupt

    return callback


def test_an_interrupted_study_resumes_and_runs_only_the_remaining_trials(
    tmp_path: Path, inputs: TrialInputs
) -> None:
    config = settings(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_study(ModelKind.LOGREG, inputs, config, "resume", callbacks=[crash_after(2)])
    numbers_seen: list[int] = []
    outcome = run_study(
        ModelKind.LOGREG, inputs, config, "resume", callbacks=[lambda s, t: numbers_seen.append(t.number)]
    )
    assert numbers_seen == [2, 3]
    assert finished_trials(outcome.study) == 4
    assert (tmp_path / "optuna" / "resume.db").is_file()  # one SQLite file per study, in the output folder


def test_a_finished_study_runs_no_more_trials(tmp_path: Path, inputs: TrialInputs) -> None:
    config = settings(tmp_path, trials=2)
    run_study(ModelKind.LOGREG, inputs, config, "done")
    again = run_study(ModelKind.LOGREG, inputs, config, "done")
    assert len(again.study.trials) == 2


def test_every_trial_records_latency_and_model_size(tmp_path: Path, inputs: TrialInputs) -> None:
    outcome = run_study(ModelKind.LOGREG, inputs, settings(tmp_path, trials=2), "attrs")
    for trial in outcome.study.get_trials(states=(TrialState.COMPLETE,)):
        assert trial.user_attrs["latency_ms"] > 0
        assert trial.user_attrs["size_bytes"] > 1000
        assert 0.0 <= trial.value <= 1.0
    assert set(outcome.params) == {"C", "numeric"}


def test_with_no_trial_within_the_latency_budget_the_fastest_is_taken_and_flagged(
    tmp_path: Path, inputs: TrialInputs
) -> None:
    outcome = run_study(
        ModelKind.LOGREG, inputs, settings(tmp_path, trials=3, latency_budget_ms=1e-6), "slow"
    )
    complete = outcome.study.get_trials(states=(TrialState.COMPLETE,))
    assert not outcome.feasible
    assert outcome.best.user_attrs["latency_ms"] == min(t.user_attrs["latency_ms"] for t in complete)


def test_multi_objective_picks_the_best_f1_among_pareto_trials_within_budget(
    tmp_path: Path, inputs: TrialInputs
) -> None:
    outcome: StudyOutcome = run_study(
        ModelKind.LOGREG, inputs, settings(tmp_path, trials=4, multi_objective=True), "pareto"
    )
    pareto = outcome.study.best_trials
    assert outcome.feasible
    assert outcome.best.number in {t.number for t in pareto}
    assert outcome.best.values[0] == max(t.values[0] for t in pareto if t.user_attrs["latency_ms"] <= 50.0)
    assert len(outcome.study.directions) == 2


def test_a_study_by_mae_minimises_it_and_keeps_the_trial_fewest_stars_off(
    tmp_path: Path, inputs: TrialInputs
) -> None:
    config = settings(tmp_path, trials=4, selection_metric="mae_stars", selection_tolerance=0.0)
    outcome = run_study(ModelKind.LOGREG, inputs, config, "mae")
    complete = outcome.study.get_trials(states=(TrialState.COMPLETE,))
    assert outcome.study.direction is StudyDirection.MINIMIZE
    assert all(t.value == pytest.approx(t.user_attrs["val_metrics"]["mae_stars"]) for t in complete)
    assert outcome.best.value == min(t.value for t in complete) < max(t.value for t in complete)


def test_a_pareto_search_by_mae_minimises_it_beside_latency(tmp_path: Path, inputs: TrialInputs) -> None:
    config = settings(tmp_path, trials=4, multi_objective=True, selection_metric="mae_stars")
    outcome = run_study(ModelKind.LOGREG, inputs, config, "pareto-mae")
    assert outcome.study.directions == [StudyDirection.MINIMIZE, StudyDirection.MINIMIZE]
    within = [t for t in outcome.study.best_trials if t.user_attrs["latency_ms"] <= 50.0]
    assert outcome.feasible and outcome.best.values[0] == min(t.values[0] for t in within)


def test_progress_is_logged_once_per_trial_with_the_best_so_far(
    tmp_path: Path, inputs: TrialInputs, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="kindle.models.tuning"):
        run_study(ModelKind.LOGREG, inputs, settings(tmp_path, trials=2), "progress")
    lines = [r.getMessage() for r in caplog.records if " trial " in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == ["logreg trial 1/2", "logreg trial 2/2"]
    assert all("best so far" in line for line in lines)


def test_trials_tied_within_the_tolerance_go_to_the_learner_s_defaults(
    tmp_path: Path, inputs: TrialInputs
) -> None:
    config = settings(tmp_path, trials=5, selection_tolerance=1.0)  # every trial is a tie
    outcome = run_study(ModelKind.LOGREG, inputs, config, "ties")
    assert outcome.params == {"C": 1.0, "numeric": False}
    strict = run_study(
        ModelKind.LOGREG, inputs, settings(tmp_path, trials=5, selection_tolerance=0.0), "ties"
    )
    complete = strict.study.get_trials(states=(TrialState.COMPLETE,))
    assert strict.best.value == max(t.value for t in complete)


def test_a_new_study_tries_the_learner_s_defaults_first(tmp_path: Path, inputs: TrialInputs) -> None:
    outcome = run_study(ModelKind.LOGREG, inputs, settings(tmp_path, trials=3), "defaults")
    first = [t.params for t in sorted(outcome.study.trials, key=lambda t: t.number)][:2]
    assert first == [{"C": 1.0, "numeric": False}, {"C": 1.0, "numeric": True}]


def test_intermediate_scores_are_computed_only_once_the_pruner_can_use_them(
    tmp_path: Path, train_df: pd.DataFrame, val_df: pd.DataFrame, tfidf: Tfidf
) -> None:
    staged = trial_inputs(ModelKind.RF, tfidf, train_df, val_df, seed=0)
    outcome = run_study(ModelKind.RF, staged, settings(tmp_path, trials=5, timeout_s=0), "staged")
    trials = sorted(outcome.study.trials, key=lambda t: t.number)
    assert [t.intermediate_values for t in trials[:PRUNER_STARTUP_TRIALS]] == [{}] * PRUNER_STARTUP_TRIALS
    for trial in trials[PRUNER_STARTUP_TRIALS:]:  # one report per stage, up to where it was pruned
        assert list(trial.intermediate_values) == list(range(1, len(trial.intermediate_values) + 1))
        assert len(trial.intermediate_values) == STAGES or trial.state is TrialState.PRUNED
    assert all("val_proba" in t.user_attrs for t in trials if t.state is TrialState.COMPLETE)


def test_the_time_budget_starts_no_trial_that_would_likely_end_past_it() -> None:
    now = [0.0]
    study = optuna.create_study(direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        now[0] += 50.0  # every trial takes 50 s
        return 0.0

    study.optimize(objective, n_trials=10, callbacks=[time_budget(120.0, clock=lambda: now[0])])
    assert len(study.trials) == 2  # after two (100 s spent), a third would end at 150 s
    one = optuna.create_study(direction="maximize")
    one.optimize(objective, n_trials=10, callbacks=[time_budget(30.0, clock=lambda: now[0])])
    assert len(one.trials) == 1  # the first trial runs even when it alone exceeds the budget
