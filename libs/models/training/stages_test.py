"""The training run's stages on real reviews: the refit on train + validation, the champion
rule, and the challenger's gate against the serving champion (real MLflow on SQLite)."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from libs.features import CLEAN_COLUMN, Tfidf
from libs.models.bundle import load_bundle
from libs.models.kinds import ModelKind
from libs.models.registry import CHAMPION
from libs.models.training.data import LABEL_COLUMN, fingerprint, labels_of
from libs.models.training.evaluation import mae_stars, predicted_labels
from libs.models.training.frozen import FROZEN_TAG, load_frozen_set
from libs.models.training.selection import SelectionMetric
from libs.models.training.settings import TrainingSettings
from libs.models.training.stages import (
    FEEDBACK_TAG,
    Decision,
    Finished,
    KindResult,
    decide,
    publish,
    search_kind,
    select_champion,
    study_name,
)
from libs.models.training.tracking import client_for, promote, register
from tests import fixtures
from tests.fixtures.models import logreg_bundle

F1 = SelectionMetric.MACRO_F1
MAE = SelectionMetric.MAE_STARS


def result(kind: str, f1: float, latency: float, feasible: bool = True, mae: float = 1.0) -> KindResult:
    validation = {"macro_f1": f1, "mae_stars": mae}
    return KindResult(kind, {}, validation, latency, 1, feasible, "s", 0.0, Path("x"))


def test_the_champion_is_the_best_feasible_kind_and_the_faster_one_on_a_tie() -> None:
    pool = [result("rf", 0.61, 40, feasible=False), result("logreg", 0.55, 2), result("mlp", 0.55004, 1)]
    assert select_champion(pool, F1).kind == "mlp"  # 0.5500 vs 0.5500 at 4 decimals: the faster wins
    assert select_champion([result("rf", 0.61, 40, feasible=False)], F1).kind == "rf"  # nothing feasible


def test_the_champion_is_chosen_by_the_selection_metric_in_its_direction() -> None:
    """Logistic regression has the better macro-F1, the MLP the lower MAE: each metric picks its own."""
    pool = [
        result("logreg", 0.55, 2, mae=0.90),
        result("mlp", 0.50, 2, mae=0.70),
        result("rf", 0.52, 2, mae=1.2),
    ]
    assert select_champion(pool, F1).kind == "logreg"
    assert select_champion(pool, MAE).kind == "mlp"
    tied = [result("logreg", 0.5, 2, mae=0.80001), result("mlp", 0.5, 1, mae=0.8)]
    assert select_champion(tied, MAE).kind == "mlp"  # 0.8000 vs 0.8000 at 4 decimals: the faster wins


def test_the_selection_metric_is_read_from_the_environment_and_an_unknown_one_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert TrainingSettings().selection_metric is F1
    monkeypatch.setenv("KINDLE_SELECTION_METRIC", "mae_stars")
    assert TrainingSettings().selection_metric is MAE
    monkeypatch.setenv("KINDLE_SELECTION_METRIC", "f1")
    with pytest.raises(ValidationError, match="selection_metric") as refused:
        TrainingSettings()
    assert all(f"'{name}'" in str(refused.value) for name in SelectionMetric)


def test_a_study_is_named_by_kind_search_settings_and_data(tmp_path: Path) -> None:
    settings = TrainingSettings(output_dir=tmp_path)
    name = study_name(ModelKind.LOGREG, settings, "ab" * 32)
    assert name == study_name(ModelKind.LOGREG, TrainingSettings(output_dir=tmp_path / "x"), "ab" * 32)
    assert name != study_name(ModelKind.LOGREG, settings, "cd" * 32)
    assert name != study_name(ModelKind.LOGREG, TrainingSettings(output_dir=tmp_path, seed=1), "ab" * 32)
    assert name != study_name(ModelKind.MLP, settings, "ab" * 32)
    by_mae = TrainingSettings(output_dir=tmp_path, selection_metric="mae_stars")
    assert name != study_name(ModelKind.LOGREG, by_mae, "ab" * 32)  # a study keeps its direction


def test_the_chosen_configuration_is_refit_on_train_and_validation(
    tmp_path: Path, train_df: pd.DataFrame, val_df: pd.DataFrame, tfidf: Tfidf
) -> None:
    both = pd.concat([train_df, val_df], ignore_index=True)
    final = Tfidf.fit(both[CLEAN_COLUMN].tolist())
    settings = TrainingSettings(kinds="logreg", trials=2, timeout_s=0, output_dir=tmp_path)
    searched = search_kind("logreg", train_df, val_df, tfidf, final, settings, tmp_path / "candidates")
    candidate = load_bundle(searched.bundle)
    assert candidate.data_fingerprint == fingerprint(both)
    only_in_validation = set(final.terms) - set(tfidf.terms)
    assert only_in_validation and candidate.tfidf is not None and candidate.tfidf.terms == final.terms
    assert searched.trials == 2 and 0 < searched.val_macro_f1 <= 1
    assert candidate.metrics["val_macro_f1"] == pytest.approx(searched.val_macro_f1)


@pytest.fixture(scope="module")
def trained_champion(train_df: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A logistic regression on the training rows: the serving champion's bundle."""
    return logreg_bundle(train_df, tmp_path_factory.mktemp("champion") / "bundle")


@pytest.fixture
def registry(tmp_path: Path, trained_champion: Path) -> tuple[TrainingSettings, Path]:
    """A real SQLite registry whose champion (v1) is `trained_champion`."""
    settings = TrainingSettings(
        output_dir=tmp_path, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"
    )
    promote(str(register(trained_champion, settings).version), settings)
    return settings, trained_champion


@pytest.fixture(scope="module")
def shuffled_challenger(train_df: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A challenger that learnt the training reviews with their stars shuffled: worse by any metric."""
    shuffled = train_df.assign(
        **{LABEL_COLUMN: np.random.default_rng(0).permutation(train_df[LABEL_COLUMN].to_numpy())}
    )
    return logreg_bundle(shuffled, tmp_path_factory.mktemp("shuffled") / "challenger")


def test_a_worse_challenger_is_rejected_and_no_alias_moves(
    registry: tuple[TrainingSettings, Path], shuffled_challenger: Path, test_df: pd.DataFrame
) -> None:
    settings, champion_path = registry
    challenger_path = shuffled_challenger
    decision = decide(challenger_path, champion_path, test_df, margin=0.0, champion_version="1", metric=F1)
    assert not decision.promote and decision.reason.startswith("rejected")
    assert decision.champion_score is not None and decision.challenger_score < decision.champion_score
    finished = Finished("logreg", challenger_path, {}, [])
    assert publish(finished, decision, settings, None, "2026-01-01T00:00:00+00:00") is None
    registered = client_for(settings).get_registered_model(settings.model_name)
    assert dict(registered.aliases) == {CHAMPION: 1}
    assert len(client_for(settings).search_model_versions(f"name='{settings.model_name}'")) == 1
    assert registered.tags[FEEDBACK_TAG] == "2026-01-01T00:00:00+00:00"  # tried, even though rejected


def test_by_mae_a_challenger_more_stars_off_is_rejected_unless_within_the_margin_in_stars(
    trained_champion: Path, shuffled_challenger: Path, test_df: pd.DataFrame
) -> None:
    """MAE is an error, lower is better: the shuffled challenger's higher MAE rejects it, and
    the margin is counted in stars."""
    champion_path = trained_champion
    strict = decide(shuffled_challenger, champion_path, test_df, 0.0, "1", metric=MAE)
    served = load_bundle(shuffled_challenger).predict_features(test_df)
    assert strict.challenger_score == pytest.approx(mae_stars(labels_of(test_df), predicted_labels(served)))
    assert strict.champion_score is not None
    gap = strict.challenger_score - strict.champion_score
    assert gap > 0 and not strict.promote
    assert strict.reason.startswith("rejected: challenger mae_stars ") and "lower is better" in strict.reason
    assert decide(shuffled_challenger, champion_path, test_df, gap + 0.01, "1", metric=MAE).promote
    assert not decide(shuffled_challenger, champion_path, test_df, gap - 0.01, "1", metric=MAE).promote


def test_a_challenger_within_the_margin_is_promoted_and_becomes_champion(
    registry: tuple[TrainingSettings, Path], val_df: pd.DataFrame, test_df: pd.DataFrame, tmp_path: Path
) -> None:
    settings, champion_path = registry
    challenger_path = logreg_bundle(val_df, tmp_path / "challenger")  # fewer rows: a bit worse, or not
    strict = decide(challenger_path, champion_path, test_df, margin=0.0, champion_version="1", metric=F1)
    lenient = decide(challenger_path, champion_path, test_df, margin=1.0, champion_version="1", metric=F1)
    assert lenient.promote and lenient.reason.startswith("promoted")
    assert strict.promote == (strict.challenger_score >= strict.champion_score)
    version = publish(Finished("logreg", challenger_path, {}, []), lenient, settings, None, "t1")
    assert version == "2"
    assert str(client_for(settings).get_model_version_by_alias(settings.model_name, CHAMPION).version) == "2"
    assert client_for(settings).get_model_version(settings.model_name, "2").tags[FEEDBACK_TAG] == "t1"


def test_the_champion_s_own_model_is_not_registered_again(
    registry: tuple[TrainingSettings, Path], test_df: pd.DataFrame, tmp_path: Path
) -> None:
    _, champion_path = registry
    copy = tmp_path / "same"
    shutil.copytree(champion_path, copy)
    decision = decide(copy, champion_path, test_df, margin=0.0, champion_version="1", metric=F1)
    assert not decision.promote and decision.reason.startswith("unchanged")


@pytest.mark.parametrize("metric", [F1, MAE])
def test_a_challenger_graded_by_its_own_labels_is_rejected_on_the_frozen_set(
    trained_champion: Path,
    train_df: pd.DataFrame,
    test_df: pd.DataFrame,
    tmp_path: Path,
    metric: SelectionMetric,
) -> None:
    """Feedback that lies grades the challenger on the run's test split; the frozen set does not,
    whichever way the selection metric counts as better."""
    champion_path = trained_champion
    flipped = train_df.assign(**{LABEL_COLUMN: 6 - train_df[LABEL_COLUMN]})
    challenger_path = logreg_bundle(flipped, tmp_path / "challenger")
    challenger = load_bundle(challenger_path)
    # The test split labelled as the liar would label it: the challenger agrees with every row.
    lies = test_df.assign(
        **{LABEL_COLUMN: np.asarray(challenger.labels)[challenger.predict_features(test_df).argmax(axis=1)]}
    )
    graded_by_lies = decide(challenger_path, champion_path, lies, 0.0, "1", metric=metric)
    assert graded_by_lies.promote, graded_by_lies.reason
    decision = decide(challenger_path, champion_path, lies, 0.0, "1", frozen=test_df, metric=metric)
    assert not decision.promote and decision.reason.startswith("rejected"), decision.reason
    assert decision.frozen_rows == len(test_df) and f"on {len(test_df)} frozen reviews" in decision.reason
    assert decision.frozen_challenger_score is not None and decision.frozen_champion_score is not None
    assert metric.oriented(decision.frozen_challenger_score) < metric.oriented(decision.frozen_champion_score)


def test_the_first_registration_freezes_the_evaluation_set_once_for_the_lineage(
    tmp_path: Path, train_df: pd.DataFrame, val_df: pd.DataFrame
) -> None:
    settings = TrainingSettings(
        output_dir=tmp_path, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"
    )
    reviews = fixtures.kindle_2018().dropna(subset=["reviewText"]).iloc[:60]
    assert load_frozen_set(settings, tmp_path / "none") is None  # no model yet
    first = Decision(True, "promoted: no champion yet", F1, 0.5, None, None, 10)
    v1 = publish(
        Finished("logreg", logreg_bundle(train_df, tmp_path / "a"), {}, []),
        first,
        settings,
        None,
        "",
        reviews,
    )
    frozen = load_frozen_set(settings, tmp_path / "f1")
    assert frozen is not None and len(frozen) == len(reviews)
    assert frozen[LABEL_COLUMN].tolist() == reviews[LABEL_COLUMN].astype(int).tolist()
    # A later registration offers other reviews: the lineage keeps the first set.
    second = Decision(True, "promoted", F1, 0.5, 0.4, "1", 10)
    other = fixtures.kindle_2018().dropna(subset=["reviewText"]).iloc[100:130]
    v2 = publish(
        Finished("logreg", logreg_bundle(val_df, tmp_path / "b"), {}, []), second, settings, None, "", other
    )
    again = load_frozen_set(settings, tmp_path / "f2")
    assert again is not None and again["text"].tolist() == frozen["text"].tolist()
    client = client_for(settings)
    tags = {client.get_model_version(settings.model_name, v).tags[FROZEN_TAG] for v in (v1, v2)}
    assert tags == {client.get_registered_model(settings.model_name).tags[FROZEN_TAG]}
