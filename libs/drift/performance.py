"""How well the model rates reviews: estimated from its calibrated confidences without labels,
and realised from labelled feedback, by the same formulas.

Both start from a 5×5 confusion matrix (rows: true star, columns: predicted star), and
every metric is a named function of that matrix, so an estimate and its realised value
can never differ by how they were computed:
- `accuracy_of`: the diagonal over the total;
- `macro_f1_of`: per star 2·TP / (2·TP + FP + FN), averaged over the five stars (a star
  neither true nor predicted anywhere scores 0, as scikit-learn's `zero_division=0`);
- `mae_of`: Σ count · |true − predicted| in stars, over the total.

**Estimated** (`estimate_performance`, confidence-based performance estimation): if the
probabilities are calibrated, review i's true star is j with probability p_ij, so the
expected confusion matrix is E[C_jk] = Σ over reviews predicted k of p_ij, and the
metrics of that matrix estimate the realised ones. This is one matrix for all five stars
at once: estimating each star one-against-the-rest and averaging, as per-class CBPE does,
counts a review's probability mass in several stars' matrices and does not add up to a
multiclass confusion matrix. The interval: `DRAWS` (200) label sets drawn from the
probabilities (seeded), each scored like real labels; the 2.5th and 97.5th percentiles of
each metric. It covers sampling noise on a window of this size, not miscalibration.

**Realised** (`realised_performance`): the observed confusion matrix of true and
predicted stars, from labelled feedback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

STARS = np.arange(1, 6)
DRAWS = 200
INTERVAL = (2.5, 97.5)
"""Percentiles of the drawn metrics that bound the estimate's interval (95 %)."""


def accuracy_of(confusion: np.ndarray) -> float:
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else float("nan")


def macro_f1_of(confusion: np.ndarray) -> float:
    true_positive = np.diag(confusion)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    denominator = predicted + actual  # 2·TP + FP + FN
    per_star = np.divide(2 * true_positive, denominator, out=np.zeros(len(STARS)), where=denominator > 0)
    return float(per_star.mean())


def mae_of(confusion: np.ndarray) -> float:
    total = confusion.sum()
    distance = np.abs(STARS[:, None] - STARS[None, :])
    return float((confusion * distance).sum() / total) if total else float("nan")


METRICS = {"accuracy": accuracy_of, "macro_f1": macro_f1_of, "mae_stars": mae_of}


def _check(proba: np.ndarray) -> np.ndarray:
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] != len(STARS):
        raise ValueError(f"probabilities must be (n, {len(STARS)}), got shape {proba.shape}")
    return proba


def expected_confusion(proba: np.ndarray) -> np.ndarray:
    """E[C_jk] = Σ over reviews predicted k (argmax) of p_ij: the confusion matrix calibrated
    probabilities expect."""
    proba = _check(proba)
    predicted = np.eye(len(STARS))[proba.argmax(axis=1)]
    return np.asarray(proba.T @ predicted)


def observed_confusion(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> np.ndarray:
    truth, pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    for name, stars in (("true", truth), ("predicted", pred)):
        outside = sorted(set(stars.tolist()) - set(STARS.tolist()))
        if outside:
            raise ValueError(f"{name} stars must be 1-5, got {outside[:5]}")
    confusion = np.zeros((len(STARS), len(STARS)))
    np.add.at(confusion, (truth - 1, pred - 1), 1)
    return confusion


@dataclass(frozen=True)
class PerformanceEstimate:
    rows: int
    values: dict[str, float]  # metric: the expected confusion matrix's value
    low: dict[str, float]  # metric: the interval's lower bound
    high: dict[str, float]  # metric: the interval's upper bound

    def to_dict(self) -> dict[str, object]:
        return {"rows": self.rows, "values": self.values, "low": self.low, "high": self.high}


def estimate_performance(proba: np.ndarray, draws: int = DRAWS, seed: int = 0) -> PerformanceEstimate:
    """Accuracy, macro-F1 and MAE of a window of scored reviews, estimated from their calibrated
    probabilities, each with its interval. Raises ValueError on an empty window."""
    proba = _check(proba)
    if len(proba) == 0:
        raise ValueError("cannot estimate performance on zero reviews")
    predicted = proba.argmax(axis=1) + 1
    expected = expected_confusion(proba)
    values = {name: metric(expected) for name, metric in METRICS.items()}
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(proba / proba.sum(axis=1, keepdims=True), axis=1)
    drawn: dict[str, list[float]] = {name: [] for name in METRICS}
    for _ in range(draws):
        # One true star per review, from its own probabilities (inverse-CDF sampling).
        labels = (rng.random((len(proba), 1)) > cumulative).sum(axis=1) + 1
        confusion = observed_confusion(np.minimum(labels, len(STARS)), predicted)
        for name, metric in METRICS.items():
            drawn[name].append(metric(confusion))
    low = {name: float(np.percentile(samples, INTERVAL[0])) for name, samples in drawn.items()}
    high = {name: float(np.percentile(samples, INTERVAL[1])) for name, samples in drawn.items()}
    return PerformanceEstimate(len(proba), values, low, high)


def realised_performance(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray
) -> dict[str, float]:
    """Accuracy, macro-F1 and MAE of predictions against labelled feedback (same formulas)."""
    confusion = observed_confusion(y_true, y_pred)
    return {name: metric(confusion) for name, metric in METRICS.items()}
