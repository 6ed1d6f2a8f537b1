"""Builders of the model kinds: hyperparameters in, an unfitted estimator out.

Every scikit-learn kind is a `StarPipeline` of `FeatureMatrix` (TF-IDF first, then the
scaled numeric features) and a learner. Dense-only learners get a TruncatedSVD view of
the TF-IDF block. Class imbalance is handled by balanced class weights, or for the MLP
(which has no class weights) by balanced resampling every epoch, so no labelled row
needs to be thrown away to balance the stars.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import TruncatedSVD
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import KBinsDiscretizer

from libs.features import Tfidf
from libs.models.components import FEATURES_STEP, BalancedEpochMLP, FeatureMatrix, StarPipeline, TermColumns
from libs.models.kinds import ModelKind, check_labels

STAGES = 4
"""Increments of a staged fit (trees for rf/hist_gb): each one is an Optuna report."""


def build_estimator(kind: ModelKind | str, params: Mapping[str, Any], tfidf: Tfidf, seed: int = 0) -> Any:
    """An unfitted estimator of `kind` with hyperparameters `params` (an Optuna trial's or the best).

    `tfidf` must be fitted on the rows the estimator is fitted on, never on the rows it is
    evaluated on.
    """
    kind = ModelKind.parse(kind)
    if kind.needs_torch:
        from libs.models.transformer import DistilBertClassifier  # torch only for this kind

        return DistilBertClassifier(**params, seed=seed)
    return StarPipeline([(FEATURES_STEP, FeatureMatrix(tfidf)), *build_learner(kind, params, tfidf, seed)])


def build_learner(
    kind: ModelKind, params: Mapping[str, Any], tfidf: Tfidf, seed: int = 0
) -> list[tuple[str, Any]]:
    """The steps after FeatureMatrix: what a trial fits on precomputed feature matrices."""
    p = dict(params)
    try:
        steps = _learner(kind, p, tfidf, seed)
    except KeyError as missing:
        raise ValueError(f"hyperparameter {missing} missing for model kind {kind.value}") from None
    if p:
        raise ValueError(f"unknown hyperparameters for model kind {kind.value}: {sorted(p)}")
    return steps


HIST_GB_BINS = 255
"""HistGradientBoosting's default `max_bins`: the components are pre-binned to as many."""


def _svd_view(tfidf: Tfidf, n_components: int, seed: int, bins: int | None = None) -> ColumnTransformer:
    """Dense view for dense-only learners: SVD of the TF-IDF block, numeric columns passed through.

    With `bins`, each component is cut at its (unweighted) quantiles into that many ordinal
    bins. This is for HistGradientBoosting with class weights: given sample weights, its own
    binning sorts every component once per weighted quantile (255 sorts per column, 10x the
    whole fit), and its staged warm-start fit bins again at every stage. With at most
    `max_bins` distinct values per column it takes the cheap path, with the same trees.
    """
    svd: Any = TruncatedSVD(n_components=n_components, random_state=seed)
    if bins is not None:
        binner = KBinsDiscretizer(
            n_bins=bins, encode="ordinal", strategy="quantile", quantile_method="averaged_inverted_cdf"
        )
        svd = Pipeline([("svd", svd), ("bins", binner)])
    return ColumnTransformer(
        [
            ("svd", svd, slice(0, tfidf.size)),
            ("numeric", "passthrough", slice(tfidf.size, None)),
        ],
        sparse_threshold=0.0,
    )


def _learner(kind: ModelKind, p: dict[str, Any], tfidf: Tfidf, seed: int) -> list[tuple[str, Any]]:
    """Pops the hyperparameters it uses from `p`."""
    if kind is ModelKind.LOGREG:
        learner = ("classifier", LogisticRegression(C=p.pop("C"), class_weight="balanced", max_iter=3000))
        return [learner] if p.pop("numeric", True) else [("terms", TermColumns(tfidf.size)), learner]
    if kind is ModelKind.MLP:
        mlp = BalancedEpochMLP(
            hidden=p.pop("hidden"),
            alpha=p.pop("alpha"),
            learning_rate=p.pop("learning_rate"),
            epochs=p.pop("epochs"),
            seed=seed,
        )
        return [("classifier", mlp)]
    bins = HIST_GB_BINS if kind is ModelKind.HIST_GB else None
    view = ("svd", _svd_view(tfidf, p.pop("n_components"), seed, bins))
    if kind is ModelKind.RF:
        forest = RandomForestClassifier(
            n_estimators=p.pop("n_estimators"),
            max_features=p.pop("max_features"),
            min_samples_leaf=p.pop("min_samples_leaf"),
            class_weight="balanced_subsample",
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
