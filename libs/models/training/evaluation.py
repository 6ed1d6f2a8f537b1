"""Metrics and error analysis of a fitted model on one split (the figures: `plots`).

Macro-F1 is the default selection metric (`selection.SelectionMetric`): the natural star
mix is skewed to 5, so accuracy and weighted F1 reward a model that ignores the rare 1-3
star reviews; macro-F1 does not. But stars are ordinal, and macro-F1 counts a 4 predicted
for a 5 as wrong as a 1: the ordinal metrics beside it (`mae_stars`, `off_by_one_accuracy`,
`quadratic_kappa`) say how far off the wrong ratings are.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
)

from libs.drift.performance import ECE_BINS, reliability_bins
from libs.features import TEXT_COLUMN, compute_features
from libs.models.calibration import FLOOR, Calibration
from libs.models.kinds import LABELS
from libs.models.training import plots
from libs.models.training.selection import SelectionMetric

Labels = Sequence[int] | np.ndarray
"""Star ratings 1-5, as a list or a numpy array."""

LATENCY_SAMPLES = 30
"""Single-review calls timed per latency measurement: enough for a stable p95, cheap in HPO."""


def predicted_labels(proba: np.ndarray) -> np.ndarray:
    return np.asarray(LABELS)[np.argmax(proba, axis=1)]


def binary_accuracy(y_true: Labels, y_pred: Labels) -> float:
    """Accuracy of negative (1-2) vs positive (4-5) on reviews that are not 3 stars.

    A non-neutral review predicted as 3 stars counts as wrong: the model failed to take sides.
    """
    truth, pred = np.asarray(y_true), np.asarray(y_pred)
    keep = truth != 3
    if not keep.any():
        return float("nan")
    truth, pred = truth[keep], pred[keep]
    return float(np.mean(((truth >= 4) == (pred >= 4)) & (pred != 3)))


def mae_stars(y_true: Labels, y_pred: Labels) -> float:
    """Mean absolute error in stars: a 4 predicted for a 5 costs 1, a 1 predicted for it 4."""
    return float(np.mean(np.abs(np.asarray(y_true, dtype=float) - np.asarray(y_pred, dtype=float))))


def off_by_one_accuracy(y_true: Labels, y_pred: Labels) -> float:
    """Share of reviews rated within one star of the truth: a near miss is not a wrong side."""
    return float(np.mean(np.abs(np.asarray(y_true) - np.asarray(y_pred)) <= 1))


def quadratic_kappa(y_true: Labels, y_pred: Labels) -> float:
    """Cohen's kappa with quadratic weights: agreement beyond chance, where a disagreement costs
    the square of its distance in stars. 1 is perfect, 0 what chance gives with the same star
    mixes; unlike MAE it does not reward predicting the most common star."""
    return float(cohen_kappa_score(y_true, y_pred, labels=LABELS, weights="quadratic"))


def ordinal_metrics(y_true: Labels, y_pred: Labels) -> dict[str, float]:
    return {
        "mae_stars": mae_stars(y_true, y_pred),
        "off_by_one_accuracy": off_by_one_accuracy(y_true, y_pred),
        "quadratic_kappa": quadratic_kappa(y_true, y_pred),
    }


def label_columns(y_true: np.ndarray) -> np.ndarray:
    """Star ratings 1..5 as column indices 0..4."""
    return np.searchsorted(np.asarray(LABELS), np.asarray(y_true, dtype=int))


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE: Σ over `reliability_bins` of share · |accuracy − mean probability|.
    0 when a model right 70 % of the time says 0.7."""
    share, confidence, accuracy = reliability_bins(y_true, proba, bins)
    return float(np.sum(share * np.abs(accuracy - confidence)))


def brier_score(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Multiclass Brier score: the mean over reviews of Σ over stars of (p − 1[true star])².
    0 is perfect, 2 all probability on a wrong star."""
    truth = np.eye(proba.shape[1])[label_columns(y_true)]
    return float(np.mean(np.sum((proba - truth) ** 2, axis=1)))


def log_loss(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean negative log probability of the true star (floored at `FLOOR`)."""
    chosen = proba[np.arange(len(proba)), label_columns(y_true)]
    return float(-np.mean(np.log(np.maximum(chosen, FLOOR))))


def calibration_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    return {
        "ece": expected_calibration_error(y_true, proba),
        "brier": brier_score(y_true, proba),
        "log_loss": log_loss(y_true, proba),
    }


def macro_f1(y_true: Labels, proba: np.ndarray) -> float:
    return float(f1_score(y_true, predicted_labels(proba), labels=LABELS, average="macro", zero_division=0))


def _of_predicted(metric: Callable[[Labels, Labels], float]) -> Callable[[Labels, np.ndarray], float]:
    """`metric` of the true stars and the most probable ones."""
    return lambda y_true, proba: metric(y_true, predicted_labels(proba))


SELECTION_SCORES: dict[SelectionMetric, Callable[[Labels, np.ndarray], float]] = {
    SelectionMetric.ACCURACY: _of_predicted(accuracy_score),
    SelectionMetric.MACRO_F1: macro_f1,
    SelectionMetric.MAE_STARS: _of_predicted(mae_stars),
    SelectionMetric.OFF_BY_ONE_ACCURACY: _of_predicted(off_by_one_accuracy),
    SelectionMetric.QUADRATIC_KAPPA: _of_predicted(quadratic_kappa),
}
"""Each selection metric's score of (true stars, probabilities): the very functions behind
`classification_metrics`, so the number that chooses is the number reported."""


def selection_score(metric: SelectionMetric, y_true: Labels, proba: np.ndarray) -> float:
    """`metric`'s score in its own units (which way is better: `metric.higher_is_better`)."""
    return float(SELECTION_SCORES[metric](y_true, proba))


def classification_metrics(y_true: Labels, proba: np.ndarray) -> dict[str, float]:
    pred = predicted_labels(proba)
    return {
        "macro_f1": macro_f1(y_true, proba),
        "weighted_f1": float(f1_score(y_true, pred, labels=LABELS, average="weighted", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, pred)),
        "binary_accuracy": binary_accuracy(y_true, pred),
        **ordinal_metrics(y_true, pred),
    }


def latency_ms(
    predict_one: Callable[[int], object], n_rows: int, samples: int = LATENCY_SAMPLES
) -> dict[str, float]:
    """p50/p95 milliseconds of `predict_one(i)` (one review each) over up to `samples` rows.

    One warm-up call first: the first call pays lazy imports and allocations a server pays once.
    """
    if n_rows == 0:
        raise ValueError("cannot measure latency on zero rows")
    predict_one(0)
    timings = []
    for i in range(min(samples, n_rows)):
        started = time.perf_counter()
        predict_one(i)
        timings.append((time.perf_counter() - started) * 1000.0)
    return {"p50": float(np.percentile(timings, 50)), "p95": float(np.percentile(timings, 95))}


def model_size_bytes(estimator: object) -> int:
    """Bytes of the pickled estimator: what a server loads into memory, comparable across kinds."""
    return len(pickle.dumps(estimator, protocol=pickle.HIGHEST_PROTOCOL))


@dataclass
class Evaluation:
    """One split's results: metrics for MLflow, and the files written (plots, CSVs)."""

    split: str
    metrics: dict[str, float]
    report: dict[str, Any]
    confusion: list[list[int]]
    files: list[Path] = field(default_factory=list)


def evaluate(
    estimator: Any,
    frame: pd.DataFrame,
    y_true: Labels,
    out_dir: Path | None = None,
    split: str = "test",
    size_bytes: int | None = None,
    calibration: Calibration | None = None,
) -> Evaluation:
    """Scores `estimator` on a features frame; with `out_dir`, writes plots and misclassified rows.

    Latency is end to end for one raw review (features, TF-IDF and model), as the service pays it.
    `size_bytes`: the model's size when it is known from its files (a served ONNX model is a
    file, not a picklable object); else the pickled estimator's. With `calibration` (the
    bundle's), every metric is of the calibrated probabilities, as served, and the metrics
    add ECE, Brier score and log-loss before and after it, with a reliability diagram.
    """
    truth = np.asarray(y_true, dtype=int)
    if len(truth) != len(frame):
        raise ValueError(f"{len(truth)} labels for {len(frame)} rows")
    raw = np.asarray(estimator.predict_proba(frame), dtype=np.float64)
    proba = raw if calibration is None else calibration.apply(raw)
    metrics = classification_metrics(truth, proba)
    if calibration is not None:
        for stage, values in (("before", raw), ("after", proba)):
            metrics |= {f"{key}_{stage}": value for key, value in calibration_metrics(truth, values).items()}
    texts = frame[TEXT_COLUMN].tolist()

    def score_one(i: int) -> object:
        one = np.asarray(estimator.predict_proba(compute_features([texts[i]])), dtype=np.float64)
        return one if calibration is None else calibration.apply(one)

    latency = latency_ms(score_one, len(texts))
    metrics.update(latency_p50_ms=latency["p50"], latency_p95_ms=latency["p95"])
    metrics["model_size_bytes"] = float(model_size_bytes(estimator) if size_bytes is None else size_bytes)
    pred = predicted_labels(proba)
    report = classification_report(truth, pred, labels=LABELS, output_dict=True, zero_division=0)
    confusion = confusion_matrix(truth, pred, labels=LABELS)
    result = Evaluation(split, metrics, report, confusion.tolist())
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        result.files = [
            plots.confusion(confusion, out_dir / f"{split}_confusion_matrix.png"),
            plots.curves(truth, proba, out_dir / f"{split}_pr_curves.png", kind="pr"),
            plots.curves(truth, proba, out_dir / f"{split}_roc_curves.png", kind="roc"),
            plots.misclassified(texts, truth, pred, proba, out_dir / f"{split}_misclassified.csv"),
        ]
        if calibration is not None:
            path = out_dir / f"{split}_reliability.png"
            points = {
                name: reliability_bins(truth, values)[1:]
                for name, values in (("raw", raw), (calibration.method, proba))
            }
            result.files.append(plots.reliability(points, path))
    return result
