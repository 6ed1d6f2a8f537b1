"""The classes a fitted scikit-learn model is made of: what serving loads and calls.

Every scikit-learn kind is a `StarPipeline` whose first step, `FeatureMatrix`, turns the
features frame (`compute_features` output) into [TF-IDF | scaled numeric] columns; the
learners come after it. These classes live apart from the builders and the search
(`libs.models.training`) because a served model needs them and nothing else: the bundle
loader trusts exactly these types (see `bundle.TRUSTED_TYPES`).

Explanations are the model's own business (`StarPipeline.explain`): only the pipeline
knows that its linear learner's first `tfidf.size` coefficients are per-term weights.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline

from libs.features import CLEAN_COLUMN, CONTRACT, TEXT_COLUMN, Tfidf
from libs.models.kinds import LABELS, check_labels

FEATURES_STEP = "features"
"""Name of the `FeatureMatrix` step in every StarPipeline."""


def review_texts(X: pd.DataFrame | Sequence[str]) -> list[str]:
    """What a text model reads: the features frame's `text` column (summary + review, as
    every kind sees it), or the texts themselves."""
    if isinstance(X, pd.DataFrame):
        if TEXT_COLUMN not in X:
            raise ValueError(f"features frame lacks column {TEXT_COLUMN!r}; pass compute_features output")
        return X[TEXT_COLUMN].astype(str).tolist()
    return [str(text) for text in X]


class ExplanationUnavailable(ValueError):
    """The model has no per-term weights to explain a prediction with."""


class FeatureMatrix(TransformerMixin, BaseEstimator):
    """Features frame -> sparse [TF-IDF of clean_text | standardised log1p(numeric)].

    log1p first because counts and lengths are heavy-tailed; the scaler then puts them
    on the scale of L2-normalised TF-IDF values so no block dominates a linear model.
    The vectoriser is not part of the fitted state the bundle stores: `tfidf.json` is its
    one copy, re-attached on load (`attach`).
    """

    def __init__(self, tfidf: Tfidf | None = None) -> None:
        self.tfidf = tfidf

    def _numeric(self, frame: pd.DataFrame) -> np.ndarray:
        missing = [name for name in [CLEAN_COLUMN, *CONTRACT.numeric_names] if name not in frame]
        if missing:
            raise ValueError(f"features frame lacks columns {missing}; pass compute_features output")
        return np.log1p(frame[CONTRACT.numeric_names].to_numpy(dtype=np.float64).clip(min=0))

    def fit(self, frame: pd.DataFrame, y: object = None) -> FeatureMatrix:
        numeric = self._numeric(frame)
        self.mean_ = numeric.mean(axis=0)
        self.scale_ = np.where(numeric.std(axis=0) > 0, numeric.std(axis=0), 1.0)
        return self

    def transform(self, frame: pd.DataFrame) -> sparse.csr_matrix:
        if self.tfidf is None:
            raise ValueError("FeatureMatrix has no TF-IDF vectoriser attached")
        numeric = (self._numeric(frame) - self.mean_) / self.scale_
        text = self.tfidf.transform(frame[CLEAN_COLUMN].tolist())
        return sparse.hstack([text, sparse.csr_matrix(numeric)], format="csr")


class TermColumns(TransformerMixin, BaseEstimator):
    """Keeps the first `n_terms` columns of a FeatureMatrix output: the TF-IDF block alone,
    for a learner that does better without the numeric features."""

    def __init__(self, n_terms: int = 0) -> None:
        self.n_terms = n_terms

    def fit(self, X: Any, y: object = None) -> TermColumns:
        return self

    def transform(self, X: Any) -> Any:
        return X[:, : self.n_terms]


class StarPipeline(Pipeline):
    """A Pipeline over the features frame whose probability columns are stars 1..5.

    It refuses training labels other than all of 1..5, and can explain a prediction when
    its learner is linear over the FeatureMatrix columns.
    """

    def fit(self, X: Any, y: Any = None, **params: Any) -> StarPipeline:
        check_labels(y)
        return super().fit(X, y, **params)

    @property
    def feature_matrix(self) -> FeatureMatrix:
        step = self.named_steps.get(FEATURES_STEP)
        if not isinstance(step, FeatureMatrix):
            raise ValueError(f"a StarPipeline starts with its {FEATURES_STEP!r} step (a FeatureMatrix)")
        return step

    def attach(self, tfidf: Tfidf | None) -> None:
        """Sets (or, with None, detaches) the vectoriser of the feature step."""
        self.feature_matrix.tfidf = tfidf

    def _term_weights(self) -> np.ndarray:
        """(stars, terms) coefficients of a learner that is linear over [TF-IDF | numeric]."""
        tfidf = self.feature_matrix.tfidf
        coef = getattr(self.steps[-1][1], "coef_", None)
        between = [step for _, step in self.steps[1:-1]]
        if coef is None or tfidf is None or not all(isinstance(step, TermColumns) for step in between):
            raise ExplanationUnavailable(
                f"a {type(self.steps[-1][1]).__name__} has no linear coefficients over TF-IDF terms"
            )
        coef = np.asarray(coef, dtype=np.float64)
        return coef[:, : tfidf.size]

    def explain(
        self, frame: pd.DataFrame, top_k: int, proba: np.ndarray | None = None
    ) -> list[dict[str, Any]]:
        """Per row, the predicted star and the terms that pushed it most (positive weights only).

        weight(term) = tfidf(term) x (coef[predicted] - mean coef over stars): the logit a
        term adds to the predicted star relative to the others. `proba`: the probabilities
        that decide the predicted star when this pipeline is one voter of several (default:
        its own).
        """
        weights = self._term_weights()
        relative = weights - weights.mean(axis=0, keepdims=True)
        tfidf = self.feature_matrix.tfidf
        assert tfidf is not None  # _term_weights checked it
        matrix = tfidf.transform(frame[CLEAN_COLUMN].tolist())
        predicted = np.argmax(self.predict_proba(frame) if proba is None else proba, axis=1)
        explanations = []
        for row, star in enumerate(predicted):
            start, end = matrix.indptr[row], matrix.indptr[row + 1]
            indices, values = matrix.indices[start:end], matrix.data[start:end]
            scores = values * relative[star, indices]
            order = np.argsort(-scores)[:top_k]
            tokens = [
                {"token": tfidf.terms[indices[i]], "weight": float(scores[i])} for i in order if scores[i] > 0
            ]
            explanations.append({"label": LABELS[star], "tokens": tokens})
        return explanations


class SoftVote:
    """The ensemble kind: `weight` x the transformer's probabilities + (1 - weight) x the TF-IDF
    model's, per review.

    The two read different things (the transformer the words in context, the TF-IDF model
    term counts and the numeric signals), so their errors differ and the average beats
    either; the weight is chosen on validation (`libs.models.training.ensemble`). Members
    are duck-typed: any `predict_proba` over the features frame (the ONNX scorer in
    serving, the torch model in training).
    """

    def __init__(self, transformer: Any, tfidf_model: StarPipeline, weight: float) -> None:
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"ensemble weight must lie in [0, 1], got {weight}")
        self.transformer = transformer
        self.tfidf_model = tfidf_model
        self.weight = float(weight)
        self.classes_ = np.array(LABELS)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return blend(
            self.transformer.predict_proba(frame), self.tfidf_model.predict_proba(frame), self.weight
        )

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.classes_[np.argmax(self.predict_proba(frame), axis=1)])

    def explain(self, frame: pd.DataFrame, top_k: int) -> list[dict[str, Any]]:
        """The ensemble's predicted star, with the terms the TF-IDF member weighs towards it
        (the transformer has no per-term weights; a non-linear TF-IDF member has none either)."""
        return self.tfidf_model.explain(frame, top_k, proba=self.predict_proba(frame))


def blend(transformer: np.ndarray, tfidf_model: np.ndarray, weight: float) -> np.ndarray:
    """The soft vote of two (n, 5) probability arrays, `weight` on the transformer's."""
    return weight * np.asarray(transformer, dtype=np.float64) + (1.0 - weight) * np.asarray(
        tfidf_model, dtype=np.float64
    )


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
        return np.asarray(self.network_.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.classes_[np.argmax(self.predict_proba(X), axis=1)])
