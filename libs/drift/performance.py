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

**The check** (`check_performance`): the window's estimate, the realised metrics of the
labelled feedback of the same window (scored by the same model), how far apart they are,
the feedback's reliability diagram (`reliability_bins`), and the verdict: the estimated
macro-F1 is more than `max_drop` (default `DEFAULT_MAX_DROP`) below the model's own test
macro-F1. No labels are needed for the verdict: feedback arrives late, if at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from libs.drift.psi import DEFAULT_MIN_ROWS

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
DEFAULT_MAX_DROP = 0.05
"""How far the estimated macro-F1 may fall below the model's test macro-F1 before the check
says the model got worse: about twice the estimate's own error on in-domain reviews
(0.02-0.04 measured on held-out Kindle book reviews)."""
ECE_BINS = 15


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


def reliability_bins(
    y_true: Sequence[int] | np.ndarray, proba: np.ndarray, bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(share of reviews, mean probability, accuracy) per non-empty bin of the predicted star's
    probability, `bins` equal-width bins of [0, 1]: the reliability diagram's points."""
    proba = _check(proba)
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) + 1 == np.asarray(y_true, dtype=int)
    which = np.clip(np.digitize(confidence, np.linspace(0.0, 1.0, bins + 1)[1:-1], right=True), 0, bins - 1)
    used = [b for b in range(bins) if (which == b).any()]
    return (
        np.array([np.mean(which == b) for b in used]),
        np.array([confidence[which == b].mean() for b in used]),
        np.array([correct[which == b].mean() for b in used]),
    )


@dataclass(frozen=True)
class PerformanceCheck:
    """How well the model rates a window of production reviews, and whether it got worse."""

    estimate: PerformanceEstimate | None  # None: fewer than min_rows scored reviews
    realised: dict[str, float] | None  # on the window's labelled feedback; None: none
    feedback_rows: int
    reference: dict[str, float]  # the model's own test metrics (accuracy, macro_f1, mae_stars)
    max_drop: float
    # The feedback's reliability diagram: (share, confidence, accuracy) per bin; None: no feedback.
    reliability: tuple[list[float], list[float], list[float]] | None

    @property
    def error(self) -> dict[str, float] | None:
        """Estimate minus realised, per metric: how far the estimate was from the truth."""
        if self.estimate is None or self.realised is None:
            return None
        return {name: self.estimate.values[name] - self.realised[name] for name in METRICS}

    @property
    def degraded(self) -> bool:
        """The estimated macro-F1 is more than `max_drop` below the test macro-F1."""
        test = self.reference.get("macro_f1")
        if self.estimate is None or test is None:
            return False
        return self.estimate.values["macro_f1"] < test - self.max_drop

    def to_dict(self) -> dict[str, object]:
        return {
            "estimate": None if self.estimate is None else self.estimate.to_dict(),
            "realised": self.realised,
            "error": self.error,
            "feedback_rows": self.feedback_rows,
            "reference": self.reference,
            "max_drop": self.max_drop,
            "degraded": self.degraded,
            "reliability": None
            if self.reliability is None
            else dict(zip(("share", "confidence", "accuracy"), self.reliability, strict=True)),
        }


def check_performance(
    proba: np.ndarray,
    feedback_proba: np.ndarray | None = None,
    feedback_stars: Sequence[int] | np.ndarray | None = None,
    reference: dict[str, float] | None = None,
    max_drop: float = DEFAULT_MAX_DROP,
    min_rows: int = DEFAULT_MIN_ROWS,
) -> PerformanceCheck:
    """The window's estimated performance (`proba`: its calibrated probabilities; none below
    `min_rows`, PSI's minimum), the realised
    performance on its labelled feedback (the model's probabilities for those reviews and their
    true stars), and the drop verdict against `reference`, the model's test metrics."""
    proba = _check(proba)
    estimate = estimate_performance(proba) if len(proba) >= max(min_rows, 1) else None
    realised = reliability = None
    rows = 0
    if feedback_proba is not None and feedback_stars is not None and len(feedback_stars):
        scored = _check(feedback_proba)
        rows = len(scored)
        realised = realised_performance(feedback_stars, scored.argmax(axis=1) + 1)
        share, confidence, accuracy = reliability_bins(feedback_stars, scored)
        reliability = (share.tolist(), confidence.tolist(), accuracy.tolist())
    known = {name: value for name, value in (reference or {}).items() if name in METRICS}
    return PerformanceCheck(estimate, realised, rows, known, max_drop, reliability)
