"""Metrics and error analysis of a fitted model on one split (the figures: `plots`).

Macro-F1 is the selection metric: the natural star mix is skewed to 5, so accuracy and
weighted F1 reward a model that ignores the rare 1-3 star reviews; macro-F1 does not.
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
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from libs.features import TEXT_COLUMN, compute_features
from libs.models.kinds import LABELS
from libs.models.training import plots

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


def macro_f1(y_true: Labels, proba: np.ndarray) -> float:
    return float(f1_score(y_true, predicted_labels(proba), labels=LABELS, average="macro", zero_division=0))


def classification_metrics(y_true: Labels, proba: np.ndarray) -> dict[str, float]:
    pred = predicted_labels(proba)
    return {
        "macro_f1": float(f1_score(y_true, pred, labels=LABELS, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, pred, labels=LABELS, average="weighted", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, pred)),
        "binary_accuracy": binary_accuracy(y_true, pred),
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
) -> Evaluation:
    """Scores `estimator` on a features frame; with `out_dir`, writes plots and misclassified rows.

    Latency is end to end for one raw review (features, TF-IDF and model), as the service pays it.
    `size_bytes`: the model's size when it is known from its files (a served ONNX model is a
    file, not a picklable object); else the pickled estimator's.
    """
    truth = np.asarray(y_true, dtype=int)
    if len(truth) != len(frame):
        raise ValueError(f"{len(truth)} labels for {len(frame)} rows")
    proba = np.asarray(estimator.predict_proba(frame))
    metrics = classification_metrics(truth, proba)
    texts = frame[TEXT_COLUMN].tolist()
    latency = latency_ms(lambda i: estimator.predict_proba(compute_features([texts[i]])), len(texts))
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
    return result
