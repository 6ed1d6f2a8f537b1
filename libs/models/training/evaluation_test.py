"""Metrics, plots and error files of a model on a split."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from libs.features import Tfidf
from libs.models.kinds import sentiment_of
from libs.models.training.data import labels_of
from libs.models.training.estimators import build_estimator
from libs.models.training.evaluation import binary_accuracy, classification_metrics, evaluate


def one_hot(stars: list[int]) -> np.ndarray:
    return np.eye(5)[np.asarray(stars) - 1]


def test_binary_accuracy_ignores_three_star_reviews_and_counts_a_predicted_three_as_wrong() -> None:
    # true 3 skipped; 1->2 right; 5->4 right; 4->3 wrong; 2->5 wrong
    assert binary_accuracy([3, 1, 5, 4, 2], [1, 2, 4, 3, 5]) == pytest.approx(0.5)


def test_perfect_predictions_score_one_everywhere() -> None:
    stars = [1, 2, 3, 4, 5, 5]
    assert classification_metrics(stars, one_hot(stars)) == {
        "macro_f1": 1.0,
        "weighted_f1": 1.0,
        "accuracy": 1.0,
        "binary_accuracy": 1.0,
    }


def test_sentiment_of_an_unknown_star_is_an_error() -> None:
    assert [sentiment_of(s) for s in (1, 3, 5)] == ["negative", "neutral", "positive"]
    with pytest.raises(ValueError, match="star rating must be one of"):
        sentiment_of(0)


def test_evaluate_writes_plots_and_misclassified_reviews(
    train_df: pd.DataFrame, test_df: pd.DataFrame, tfidf: Tfidf, tmp_path: Path
) -> None:
    model = build_estimator("logreg", {"C": 5.0}, tfidf).fit(train_df, labels_of(train_df))
    result = evaluate(model, test_df, labels_of(test_df), tmp_path, split="test")
    assert {p.name for p in result.files} == {
        "test_confusion_matrix.png",
        "test_pr_curves.png",
        "test_roc_curves.png",
        "test_misclassified.csv",
    }
    assert all(p.stat().st_size > 0 for p in result.files)
    wrong = pd.read_csv(tmp_path / "test_misclassified.csv")
    assert len(wrong) == round((1 - result.metrics["accuracy"]) * len(test_df))
    assert (wrong["true_stars"] != wrong["predicted_stars"]).all()
    assert np.asarray(result.confusion).sum() == len(test_df)
    assert result.metrics["latency_p95_ms"] >= result.metrics["latency_p50_ms"] > 0
    assert result.metrics["model_size_bytes"] > 0
    assert set(result.report) >= {"1", "5", "macro avg"}
