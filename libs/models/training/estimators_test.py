"""Every scikit-learn kind trains on real reviews and scores the five stars in order."""

import numpy as np
import pandas as pd
import pytest

from libs.features import Tfidf
from libs.models.kinds import LABELS, SKLEARN_KINDS, ModelKind
from libs.models.training.data import labels_of
from libs.models.training.estimators import HIST_GB_BINS, build_estimator, fit_in_stages
from libs.models.training.evaluation import classification_metrics

SMALL = {
    ModelKind.LOGREG: {"C": 5.0},
    ModelKind.RF: {"n_components": 50, "n_estimators": 60, "max_features": "sqrt", "min_samples_leaf": 2},
    ModelKind.HIST_GB: {
        "n_components": 50,
        "max_iter": 30,
        "learning_rate": 0.1,
        "max_leaf_nodes": 7,
        "l2_regularization": 1.0,
    },
    ModelKind.MLP: {"hidden": 32, "alpha": 1e-4, "learning_rate": 3e-3, "epochs": 6},
}


@pytest.mark.parametrize("kind", SKLEARN_KINDS, ids=str)
def test_kind_trains_and_predicts_five_star_probabilities_better_than_chance(
    kind: ModelKind, train_df: pd.DataFrame, val_df: pd.DataFrame, tfidf: Tfidf
) -> None:
    model = build_estimator(kind, SMALL[kind], tfidf, seed=1).fit(train_df, labels_of(train_df))
    proba = model.predict_proba(val_df)
    assert list(model.classes_) == LABELS
    assert proba.shape == (len(val_df), 5)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # Balanced classes: chance accuracy is 0.2.
    assert classification_metrics(labels_of(val_df), proba)["accuracy"] > 0.3


def test_a_staged_fit_ends_with_the_model_a_plain_fit_gives(
    train_df: pd.DataFrame, val_df: pd.DataFrame, tfidf: Tfidf
) -> None:
    staged = build_estimator(ModelKind.RF, SMALL[ModelKind.RF], tfidf, seed=3)
    steps = list(fit_in_stages(staged, train_df, labels_of(train_df)))
    plain = build_estimator(ModelKind.RF, SMALL[ModelKind.RF], tfidf, seed=3).fit(
        train_df, labels_of(train_df)
    )
    assert steps == [1, 2, 3, 4]
    np.testing.assert_allclose(staged.predict_proba(val_df), plain.predict_proba(val_df))


def test_hist_gb_gets_its_components_pre_binned_so_class_weighted_binning_stays_cheap(
    train_df: pd.DataFrame, tfidf: Tfidf
) -> None:
    model = build_estimator(ModelKind.HIST_GB, SMALL[ModelKind.HIST_GB], tfidf)
    model.fit(train_df, labels_of(train_df))
    dense = model[:-1].transform(train_df)
    components = dense[:, : SMALL[ModelKind.HIST_GB]["n_components"]]
    assert max(len(np.unique(column)) for column in components.T) <= HIST_GB_BINS
    assert model[-1].n_features_in_ == dense.shape[1]  # the numeric columns still pass through


def test_training_without_every_star_is_refused(train_df: pd.DataFrame, tfidf: Tfidf) -> None:
    no_twos = train_df[train_df["overall"] != 2]
    with pytest.raises(ValueError, match=r"miss stars \[2\]"):
        build_estimator(ModelKind.LOGREG, SMALL[ModelKind.LOGREG], tfidf).fit(no_twos, labels_of(no_twos))


def test_labels_outside_one_to_five_are_refused(train_df: pd.DataFrame, tfidf: Tfidf) -> None:
    labels = labels_of(train_df).copy()
    labels[0] = 6
    with pytest.raises(ValueError, match=r"found \[6\]"):
        build_estimator(ModelKind.LOGREG, SMALL[ModelKind.LOGREG], tfidf).fit(train_df, labels)


def test_wrong_hyperparameters_are_named(tfidf: Tfidf) -> None:
    with pytest.raises(ValueError, match="unknown hyperparameters for model kind logreg: \\['gamma'\\]"):
        build_estimator(ModelKind.LOGREG, {"C": 1.0, "gamma": 2}, tfidf)
    with pytest.raises(ValueError, match="hyperparameter 'C' missing"):
        build_estimator(ModelKind.LOGREG, {}, tfidf)


def test_unknown_kind_lists_the_known_ones(tfidf: Tfidf) -> None:
    with pytest.raises(ValueError, match="unknown model kind 'svm'; known kinds: logreg, rf"):
        build_estimator("svm", {}, tfidf)


def test_a_frame_without_the_feature_columns_is_refused(train_df: pd.DataFrame, tfidf: Tfidf) -> None:
    model = build_estimator(ModelKind.LOGREG, SMALL[ModelKind.LOGREG], tfidf)
    with pytest.raises(ValueError, match=r"lacks columns.*caps_ratio"):
        model.fit(train_df.drop(columns=["caps_ratio"]), labels_of(train_df))
