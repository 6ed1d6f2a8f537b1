"""The transformer and ensemble kinds through the pipeline's own stages, on a tiny random BERT.

search_kind keeps the transformer's best trial (no second fine-tune), build_ensemble votes it
with logistic regression at the weight that scores best on validation, and the ensemble's
bundle serves, explains and carries its members' model files unchanged.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["KINDLE_ONNX_THREADS"] = "1"

import dataclasses
import json
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch

from libs.features import CLEAN_COLUMN, Tfidf
from libs.models.bundle import (
    CALIBRATION_FILE,
    ENSEMBLE_FILE,
    MANIFEST,
    load_bundle,
    model_digest,
    save_bundle,
)
from libs.models.components import SoftVote, blend
from libs.models.kinds import ModelKind
from libs.models.training.data import fingerprint, labels_of
from libs.models.training.ensemble import WEIGHTS, build_ensemble, choose_weight
from libs.models.training.evaluation import macro_f1
from libs.models.training.selection import SelectionMetric
from libs.models.training.settings import TrainingSettings
from libs.models.training.stages import KindResult, search_kind, select_champion
from tests.fixtures.tiny_transformer import tiny_distilbert

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, train_df: pd.DataFrame) -> TrainingSettings:
    tiny = tiny_distilbert(tmp_path_factory.mktemp("tiny"), train_df["text"].tolist())
    return TrainingSettings(
        kinds="logreg,distilbert,ensemble",
        trials=1,
        timeout_s=0,
        pretrained=str(tiny),
        transformer_max_length=64,
        latency_budget_ms=1e6,
        output_dir=tmp_path_factory.mktemp("runs"),
    )


@pytest.fixture(scope="module")
def searched(
    settings: TrainingSettings,
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, KindResult]:
    search = Tfidf.fit(train_df[CLEAN_COLUMN].tolist())
    final = Tfidf.fit(pd.concat([train_df, val_df])[CLEAN_COLUMN].tolist())
    out = tmp_path_factory.mktemp("candidates")
    return {
        kind: search_kind(kind, train_df, val_df, search, final, settings, out)
        for kind in ("logreg", "distilbert")
    }


@pytest.fixture(scope="module")
def ensemble(
    searched: dict[str, KindResult],
    settings: TrainingSettings,
    val_df: pd.DataFrame,
    tmp_path_factory: pytest.TempPathFactory,
) -> KindResult:
    return build_ensemble(list(searched.values()), val_df, settings, tmp_path_factory.mktemp("ensemble"))


def test_the_transformer_candidate_is_its_best_trial_fitted_on_train_only(
    searched: dict[str, KindResult], settings: TrainingSettings, train_df: pd.DataFrame, val_df: pd.DataFrame
) -> None:
    result = searched["distilbert"]
    bundle = load_bundle(result.bundle)
    assert bundle.data_fingerprint == fingerprint(train_df)  # not refit on train + validation
    assert result.params["max_length"] == settings.transformer_max_length  # the first trial: the recipe
    # Its validation score is the trial's, out of sample, and the served model reproduces it.
    assert macro_f1(labels_of(val_df), bundle.predict_features(val_df)) == pytest.approx(
        result.val_macro_f1, abs=0.02
    )
    assert np.asarray(result.val_proba).shape == (len(val_df), 5)
    # Only the best trial's model is kept beside the study.
    assert len(list((settings.output_dir / "optuna").glob("distilbert-*/trial-*"))) == 1
    # The TF-IDF kinds are still refit on train + validation.
    assert load_bundle(searched["logreg"].bundle).data_fingerprint == fingerprint(
        pd.concat([train_df, val_df], ignore_index=True)
    )


def test_the_transformer_is_timed_as_it_serves_not_as_its_trials_ran(
    searched: dict[str, KindResult], settings: TrainingSettings
) -> None:
    result = searched["distilbert"]
    study = optuna.load_study(study_name=result.study, storage=settings.storage_url(result.study))
    timed_in_torch = study.best_trial.user_attrs["latency_ms"]
    assert result.latency_ms > 0 and result.latency_ms != timed_in_torch  # timed again, on its bundle
    assert result.feasible == (result.latency_ms <= settings.latency_budget_ms)
    assert type(load_bundle(result.bundle).estimator).__name__ == "OnnxClassifier"


def test_the_weight_is_the_best_soft_vote_on_validation(
    searched: dict[str, KindResult], ensemble: KindResult, val_df: pd.DataFrame
) -> None:
    truth = labels_of(val_df)
    transformer, logreg = (np.asarray(searched[k].val_proba) for k in ("distilbert", "logreg"))
    weight = ensemble.params["weight"]
    assert weight in WEIGHTS and ensemble.params["tfidf_kind"] == "logreg"
    best = max(macro_f1(truth, blend(transformer, logreg, w)) for w in WEIGHTS)
    assert ensemble.val_macro_f1 == pytest.approx(best, abs=1e-4)
    # Both members alone are among the weights tried, so the vote is never worse than either.
    assert ensemble.val_macro_f1 >= max(searched[k].val_macro_f1 for k in ("distilbert", "logreg")) - 1e-4
    assert ensemble.latency_ms == pytest.approx(
        searched["distilbert"].latency_ms + searched["logreg"].latency_ms
    )


def test_choose_weight_prefers_the_even_vote_on_a_tie() -> None:
    truth = np.array([1, 2, 3, 4, 5])
    same = np.eye(5)
    assert choose_weight(truth, same, same, SelectionMetric.MACRO_F1) == 0.5
    # A transformer confidently wrong: every weight under 0.5 scores perfectly, the nearest wins.
    assert choose_weight(truth, np.roll(same, 1, axis=1), same, SelectionMetric.MACRO_F1) == 0.45


def test_the_weight_follows_the_selection_metric() -> None:
    """The TF-IDF kind is exactly right on three reviews and far off on two (macro-F1 0.5,
    MAE 1.4 stars); the transformer is one star off on all five (macro-F1 0, MAE 1.0). At an
    even vote every review's tie goes to the lower star, the TF-IDF kind's."""
    truth = np.array([1, 2, 3, 4, 5])
    tfidf_model, transformer = np.eye(5)[[0, 1, 2, 0, 0]], np.eye(5)[[1, 2, 3, 4, 3]]
    assert choose_weight(truth, transformer, tfidf_model, SelectionMetric.MACRO_F1) == 0.5
    assert choose_weight(truth, transformer, tfidf_model, SelectionMetric.MAE_STARS) == 0.55


def test_the_ensemble_bundle_serves_the_vote_of_its_members(
    searched: dict[str, KindResult], ensemble: KindResult, test_df: pd.DataFrame
) -> None:
    bundle = load_bundle(ensemble.bundle)
    assert bundle.kind == "ensemble" and isinstance(bundle.estimator, SoftVote)
    weight = ensemble.params["weight"]
    # The vote is of the members' uncalibrated probabilities, then the ensemble's own calibration.
    members = [load_bundle(searched[k].bundle) for k in ("distilbert", "logreg")]
    raw = [member.estimator.predict_proba(test_df) for member in members]
    assert bundle.calibration is not None
    expected = bundle.calibration.apply(blend(*raw, weight))
    np.testing.assert_allclose(bundle.predict_features(test_df), expected, atol=1e-9)
    # The members' model files are copied unchanged, plus the weight and its own calibration.
    listed = set(json.loads((ensemble.bundle / MANIFEST).read_text())["files"])
    assert ENSEMBLE_FILE in listed and "estimator.skops" in listed and "estimator/onnx/serving.json" in listed
    assert CALIBRATION_FILE in listed and all(member.calibration is not None for member in members)
    assert {"val_ece_before", "val_ece_after"} <= set(bundle.metrics)
    assert bundle.metadata()["library_versions"].keys() >= {"onnxruntime", "tokenizers", "scikit-learn"}


def test_the_ensemble_explains_its_own_prediction_with_the_tfidf_members_terms(
    ensemble: KindResult, test_df: pd.DataFrame
) -> None:
    bundle = load_bundle(ensemble.bundle)
    rows = test_df.head(8)
    explained = bundle.estimator.explain(rows, 5)
    predicted = bundle.predict_features(rows).argmax(axis=1) + 1
    assert [row["label"] for row in explained] == predicted.tolist()
    assert any(row["tokens"] for row in explained)


def test_a_changed_weight_changes_the_model_digest(ensemble: KindResult, tmp_path: Path) -> None:
    bundle = load_bundle(ensemble.bundle)
    vote = bundle.estimator
    moved = SoftVote(vote.transformer, vote.tfidf_model, 1.0 - vote.weight if vote.weight != 0.5 else 0.25)
    saved = save_bundle(
        dataclasses.replace(bundle, estimator=moved), tmp_path / "moved", model_files_from=ensemble.bundle
    )
    assert model_digest(saved) != model_digest(ensemble.bundle)


def test_the_champion_rule_applies_to_the_ensemble(
    searched: dict[str, KindResult], ensemble: KindResult
) -> None:
    pool = [*searched.values(), ensemble]
    best = max(round(r.val_macro_f1, 4) for r in pool)
    assert round(select_champion(pool, SelectionMetric.MACRO_F1).val_macro_f1, 4) == best


def test_the_ensemble_kind_is_refused_without_its_voters() -> None:
    with pytest.raises(ValueError, match="ensemble kind votes the transformer"):
        TrainingSettings(kinds="ensemble,logreg")
    with pytest.raises(ValueError, match="has no study"):
        search_kind(
            ModelKind.ENSEMBLE,
            pd.DataFrame(),
            pd.DataFrame(),
            None,
            None,
            TrainingSettings(kinds="logreg"),
            Path("."),
        )  # type: ignore[arg-type]


def test_default_kinds_add_the_transformer_and_ensemble_where_they_can_run(tmp_path: Path) -> None:
    from libs.models.kinds import SKLEARN_KINDS, TRANSFORMER_KINDS

    # torch, transformers and the installed MiniLM are all here (this target's dependencies).
    assert TrainingSettings().kinds == [*SKLEARN_KINDS, *TRANSFORMER_KINDS]
    assert TrainingSettings(pretrained=str(tmp_path)).kinds == [*SKLEARN_KINDS, *TRANSFORMER_KINDS]
    # A checkpoint that is not on this machine: the scikit-learn kinds only.
    assert TrainingSettings(pretrained=str(tmp_path / "absent")).kinds == list(SKLEARN_KINDS)
    # An explicit choice narrows the set, from the settings or the environment alike.
    assert TrainingSettings(kinds="logreg,distilbert").kinds == [ModelKind.LOGREG, ModelKind.DISTILBERT]
