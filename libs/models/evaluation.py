"""Metrics, plots and error analysis of a fitted model on one split.

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

import matplotlib

matplotlib.use("Agg")  # headless: training runs on servers and in tests

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    auc,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    roc_curve,
)

from libs.features import TEXT_COLUMN, compute_features
from libs.models.kinds import LABELS

LATENCY_SAMPLES = 30
"""Single-review calls timed per latency measurement: enough for a stable p95, cheap in HPO."""


def predicted_labels(proba: np.ndarray) -> np.ndarray:
    return np.asarray(LABELS)[np.argmax(proba, axis=1)]


def sentiment_of(stars: int) -> str:
    """1-2 negative, 3 neutral, 4-5 positive: the product's sentiment of a star rating."""
    star = int(stars)
    if star not in LABELS:
        raise ValueError(f"star rating must be one of {LABELS}, got {stars!r}")
    return "negative" if star <= 2 else "neutral" if star == 3 else "positive"


def binary_accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Accuracy of negative (1-2) vs positive (4-5) on reviews that are not 3 stars.

    A non-neutral review predicted as 3 stars counts as wrong: the model failed to take sides.
    """
    truth, pred = np.asarray(y_true), np.asarray(y_pred)
    keep = truth != 3
    if not keep.any():
        return float("nan")
    truth, pred = truth[keep], pred[keep]
    return float(np.mean(((truth >= 4) == (pred >= 4)) & (pred != 3)))


def macro_f1(y_true: Sequence[int], proba: np.ndarray) -> float:
    return float(f1_score(y_true, predicted_labels(proba), labels=LABELS, average="macro", zero_division=0))


def classification_metrics(y_true: Sequence[int], proba: np.ndarray) -> dict[str, float]:
    pred = predicted_labels(proba)
    return {
        "macro_f1": float(f1_score(y_true, pred, labels=LABELS, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, pred, labels=LABELS, average="weighted", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, pred)),
        "binary_accuracy": binary_accuracy(y_true, pred),
    }


def latency_ms(predict_one: Callable[[int], object], n_rows: int, samples: int = LATENCY_SAMPLES) -> dict:
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
    y_true: Sequence[int],
    out_dir: Path | None = None,
    split: str = "test",
) -> Evaluation:
    """Scores `estimator` on a features frame; with `out_dir`, writes plots and misclassified rows.

    Latency is end to end for one raw review (features, TF-IDF and model), as the service pays it.
    """
    y_true = np.asarray(y_true, dtype=int)
    if len(y_true) != len(frame):
        raise ValueError(f"{len(y_true)} labels for {len(frame)} rows")
    proba = np.asarray(estimator.predict_proba(frame))
    metrics = classification_metrics(y_true, proba)
    texts = frame[TEXT_COLUMN].tolist()
    latency = latency_ms(lambda i: estimator.predict_proba(compute_features([texts[i]])), len(texts))
    metrics.update(latency_p50_ms=latency["p50"], latency_p95_ms=latency["p95"])
    metrics["model_size_bytes"] = float(model_size_bytes(estimator))
    pred = predicted_labels(proba)
    report = classification_report(y_true, pred, labels=LABELS, output_dict=True, zero_division=0)
    confusion = confusion_matrix(y_true, pred, labels=LABELS)
    result = Evaluation(split, metrics, report, confusion.tolist())
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        result.files = [
            _plot_confusion(confusion, out_dir / f"{split}_confusion_matrix.png"),
            _plot_curves(y_true, proba, out_dir / f"{split}_pr_curves.png", kind="pr"),
            _plot_curves(y_true, proba, out_dir / f"{split}_roc_curves.png", kind="roc"),
            _misclassified(texts, y_true, pred, proba, out_dir / f"{split}_misclassified.csv"),
        ]
    return result


def _plot_confusion(confusion: np.ndarray, path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(5, 4.5))
    axes.imshow(confusion, cmap="Blues")
    for (row, column), count in np.ndenumerate(confusion):
        colour = "white" if count > confusion.max() / 2 else "black"
        axes.text(column, row, str(count), ha="center", va="center", color=colour)
    axes.set(xticks=range(len(LABELS)), yticks=range(len(LABELS)), xticklabels=LABELS, yticklabels=LABELS)
    axes.set(xlabel="predicted stars", ylabel="true stars", title="Confusion matrix")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _plot_curves(y_true: np.ndarray, proba: np.ndarray, path: Path, kind: str) -> Path:
    """One-vs-rest precision-recall or ROC curve per star."""
    figure, axes = plt.subplots(figsize=(5.5, 4.5))
    for column, star in enumerate(LABELS):
        positive = y_true == star
        if not positive.any() or positive.all():
            continue  # the curve is undefined without both classes
        if kind == "pr":
            precision, recall, _ = precision_recall_curve(positive, proba[:, column])
            axes.plot(recall, precision, label=f"{star}★ (area {auc(recall, precision):.2f})")
        else:
            fpr, tpr, _ = roc_curve(positive, proba[:, column])
            axes.plot(fpr, tpr, label=f"{star}★ (AUC {auc(fpr, tpr):.2f})")
    if kind == "pr":
        axes.set(xlabel="recall", ylabel="precision", title="Precision-recall, one vs rest")
    else:
        axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
        axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, one vs rest")
    axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _misclassified(
    texts: list[str], y_true: np.ndarray, pred: np.ndarray, proba: np.ndarray, path: Path
) -> Path:
    """Wrong predictions, most confident first: the errors worth reading."""
    wrong = np.flatnonzero(y_true != pred)
    rows = pd.DataFrame(
        {
            "text": [texts[i] for i in wrong],
            "true_stars": y_true[wrong],
            "predicted_stars": pred[wrong],
            "confidence": proba[wrong].max(axis=1),
        }
    ).sort_values("confidence", ascending=False)
    rows.to_csv(path, index=False)
    return path
