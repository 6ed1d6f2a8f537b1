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

    @property
    def needs_torch(self) -> bool:
        """Kinds that need torch/transformers, which sklearn-only deployments do not install."""
        return self is ModelKind.DISTILBERT

    @classmethod
    def parse(cls, value: str | ModelKind) -> ModelKind:
        """The kind named by `value`; the error lists the known kinds instead of a bare KeyError."""
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            known = ", ".join(kind.value for kind in cls)
            raise ValueError(f"unknown model kind {value!r}; known kinds: {known}") from None


SKLEARN_KINDS: tuple[ModelKind, ...] = tuple(kind for kind in ModelKind if not kind.needs_torch)
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
