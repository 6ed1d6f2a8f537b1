"""The figures and error listings of an evaluation: confusion matrix, PR/ROC curves, worst errors."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: training runs on servers and in tests

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import auc, precision_recall_curve, roc_curve

from libs.models.kinds import LABELS


def confusion(confusion: np.ndarray, path: Path) -> Path:
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


def curves(y_true: np.ndarray, proba: np.ndarray, path: Path, kind: str) -> Path:
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


def reliability(points: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """Reliability diagram: {name: (mean probability, accuracy) per bin} as one line each (raw
    and calibrated); the diagonal is a model whose probabilities are its accuracy."""
    figure, axes = plt.subplots(figsize=(5, 4.5))
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    for name, (confidence, accuracy) in points.items():
        axes.plot(confidence, accuracy, marker="o", label=name)
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="probability of the predicted star", ylabel="accuracy")
    axes.set(title="Reliability")
    axes.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def misclassified(
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
