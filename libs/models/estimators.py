"""Builders of the scikit-learn kinds: the features frame in, 5-star probabilities out.

Every estimator is a `StarPipeline` whose first step, `FeatureMatrix`, turns the features
frame (`compute_features` output) into [TF-IDF | scaled numeric] columns, TF-IDF first so
a linear model's first `tfidf.size` coefficients are per-term weights (the service's
explanations rely on that). Dense-only learners get a TruncatedSVD view of the TF-IDF
block. Class imbalance is handled by balanced class weights, or for the MLP (which has
no class weights) by balanced resampling every epoch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import TruncatedSVD
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline

from libs.features import CLEAN_COLUMN, CONTRACT, FeatureContract, Tfidf
from libs.models.kinds import LABELS, ModelKind, check_labels

STAGES = 4
"""Increments of a staged fit (trees for rf/hist_gb): each one is an Optuna report."""


class FeatureMatrix(TransformerMixin, BaseEstimator):
    """Features frame -> sparse [TF-IDF of clean_text | standardised log1p(numeric)].

    log1p first because counts and lengths are heavy-tailed; the scaler then puts them
    on the scale of L2-normalised TF-IDF values so no block dominates a linear model.
    """

    def __init__(self, tfidf: Tfidf, contract: FeatureContract = CONTRACT) -> None:
        self.tfidf = tfidf
        self.contract = contract

    def _numeric(self, frame: pd.DataFrame) -> np.ndarray:
        missing = [name for name in [CLEAN_COLUMN, *self.contract.numeric_names] if name not in frame]
        if missing:
            raise ValueError(f"features frame lacks columns {missing}; pass compute_features output")
        return np.log1p(frame[self.contract.numeric_names].to_numpy(dtype=np.float64).clip(min=0))

    def fit(self, frame: pd.DataFrame, y: object = None) -> FeatureMatrix:
        numeric = self._numeric(frame)
        self.mean_ = numeric.mean(axis=0)
        self.scale_ = np.where(numeric.std(axis=0) > 0, numeric.std(axis=0), 1.0)
        return self

    def transform(self, frame: pd.DataFrame) -> sparse.csr_matrix:
        numeric = (self._numeric(frame) - self.mean_) / self.scale_
        text = self.tfidf.transform(frame[CLEAN_COLUMN].tolist())
        return sparse.hstack([text, sparse.csr_matrix(numeric)], format="csr")


class StarPipeline(Pipeline):
    """A Pipeline that refuses labels other than all of 1..5, so probability columns are stars 1..5."""

    def fit(self, X: Any, y: Any = None, **params: Any) -> StarPipeline:
        check_labels(y)
        return super().fit(X, y, **params)


class BalancedEpochMLP(ClassifierMixin, BaseEstimator):
    """An MLP trained epoch by epoch on class-balanced resamples of the training set.

    MLPClassifier takes no class weights; drawing each epoch's rows with probability
    inverse to their class frequency gives every star the same expected weight, and the
    epoch loop is what lets Optuna prune a hopeless trial after each epoch.
    """

    def __init__(
        self,
        hidden: int = 128,
        alpha: float = 1e-4,
        learning_rate: float = 1e-3,
        epochs: int = 10,
        batch_size: int = 128,
        seed: int = 0,
    ) -> None:
        self.hidden = hidden
        self.alpha = alpha
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.seed = seed

    def fit_stages(self, X: Any, y: Any) -> Iterator[int]:
        check_labels(y)
        y = np.asarray(y)
        self.classes_ = np.array(LABELS)
        self.network_ = MLPClassifier(
            hidden_layer_sizes=(self.hidden,),
            alpha=self.alpha,
            learning_rate_init=self.learning_rate,
            batch_size=self.batch_size,
            random_state=self.seed,
        )
        counts = {label: np.sum(y == label) for label in LABELS}
        weights = np.array([1.0 / counts[label] for label in y])
        weights /= weights.sum()
        rng = np.random.default_rng(self.seed)
        for epoch in range(1, self.epochs + 1):
            rows = rng.choice(len(y), size=len(y), replace=True, p=weights)
            self.network_.partial_fit(X[rows], y[rows], classes=self.classes_)
            yield epoch

    def fit(self, X: Any, y: Any) -> BalancedEpochMLP:
        for _ in self.fit_stages(X, y):
            pass
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.network_.predict_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def _svd_view(tfidf: Tfidf, n_components: int, seed: int) -> ColumnTransformer:
    """Dense view for dense-only learners: SVD of the TF-IDF block, numeric columns passed through."""
    return ColumnTransformer(
        [
            ("svd", TruncatedSVD(n_components=n_components, random_state=seed), slice(0, tfidf.size)),
            ("numeric", "passthrough", slice(tfidf.size, None)),
        ],
        sparse_threshold=0.0,
    )


def build_estimator(
    kind: ModelKind | str,
    params: Mapping[str, Any],
    tfidf: Tfidf,
    contract: FeatureContract = CONTRACT,
    seed: int = 0,
) -> BaseEstimator:
    """An unfitted estimator of `kind` with hyperparameters `params` (an Optuna trial's or the best).

    `tfidf` must be fitted on the training split only; `contract` is the feature contract the
    features frame follows.
    """
    kind = ModelKind.parse(kind)
    if kind is ModelKind.DISTILBERT:
        from libs.models.distilbert import DistilBertClassifier  # torch only for this kind

        return DistilBertClassifier(**params, seed=seed)
    p = dict(params)
    try:
        steps = [("features", FeatureMatrix(tfidf, contract)), *_learner(kind, p, tfidf, seed)]
    except KeyError as missing:
        raise ValueError(f"hyperparameter {missing} missing for model kind {kind.value}") from None
    if p:
        raise ValueError(f"unknown hyperparameters for model kind {kind.value}: {sorted(p)}")
    return StarPipeline(steps)


def _learner(kind: ModelKind, p: dict[str, Any], tfidf: Tfidf, seed: int) -> list[tuple[str, Any]]:
    """The steps after FeatureMatrix; pops the hyperparameters it uses from `p`."""
    if kind is ModelKind.LOGREG:
        return [("classifier", LogisticRegression(C=p.pop("C"), class_weight="balanced", max_iter=3000))]
    if kind is ModelKind.MLP:
        mlp = BalancedEpochMLP(
            hidden=p.pop("hidden"),
            alpha=p.pop("alpha"),
            learning_rate=p.pop("learning_rate"),
            epochs=p.pop("epochs"),
            seed=seed,
        )
        return [("classifier", mlp)]
    view = ("svd", _svd_view(tfidf, p.pop("n_components"), seed))
    if kind is ModelKind.RF:
        forest = RandomForestClassifier(
            n_estimators=p.pop("n_estimators"),
            max_features=p.pop("max_features"),
            min_samples_leaf=p.pop("min_samples_leaf"),
            class_weight="balanced_subsample",
            n_jobs=-1,
            random_state=seed,
        )
        return [view, ("classifier", forest)]
    boosting = HistGradientBoostingClassifier(
        max_iter=p.pop("max_iter"),
        learning_rate=p.pop("learning_rate"),
        max_leaf_nodes=p.pop("max_leaf_nodes"),
        l2_regularization=p.pop("l2_regularization"),
        class_weight="balanced",
        early_stopping=False,
        random_state=seed,
    )
    return [view, ("classifier", boosting)]


def fit_in_stages(estimator: BaseEstimator, X: Any, y: Any) -> Iterator[int]:
    """Fits `estimator`, yielding a step number after each increment so HPO can report and prune.

    The end state is the same model `estimator.fit(X, y)` gives: forests grow with
    warm_start (same per-tree seeds), boosting adds iterations, the MLP runs its epochs.
    Learners without increments yield once, after the whole fit.
    """
    check_labels(y)
    if isinstance(estimator, Pipeline):
        for _, step in estimator.steps[:-1]:
            X = step.fit_transform(X, y)
        yield from fit_in_stages(estimator.steps[-1][1], X, y)
        return
    if hasattr(estimator, "fit_stages"):
        yield from estimator.fit_stages(X, y)
        return
    size_param = {RandomForestClassifier: "n_estimators", HistGradientBoostingClassifier: "max_iter"}
    name = size_param.get(type(estimator))
    if name is None:
        estimator.fit(X, y)
        yield 1
        return
    total = getattr(estimator, name)
    stops = sorted({max(1, round(total * stage / STAGES)) for stage in range(1, STAGES + 1)})
    estimator.set_params(warm_start=True)
    try:
        for step, stop in enumerate(stops, start=1):
            with warnings.catch_warnings():
                # The forest warns that balanced weights may differ between warm starts;
                # here every stage sees the same rows, so the weights are the same.
                warnings.filterwarnings("ignore", message="class_weight presets", category=UserWarning)
                estimator.set_params(**{name: stop}).fit(X, y)
            yield step
    finally:
        estimator.set_params(warm_start=False, **{name: total})
