"""Metrics, plots and error files of a model on a split."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from libs.features import Tfidf
from libs.models.calibration import TemperatureScaling
from libs.models.kinds import sentiment_of
from libs.models.training.data import labels_of
from libs.models.training.estimators import build_estimator
from libs.models.training.evaluation import (
    binary_accuracy,
    classification_metrics,
    evaluate,
    expected_calibration_error,
    log_loss,
    mae_stars,
    off_by_one_accuracy,
    quadratic_kappa,
    selection_score,
)
from libs.models.training.selection import SelectionMetric


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
        "mae_stars": 0.0,
        "off_by_one_accuracy": 1.0,
        "quadratic_kappa": 1.0,
    }


def test_ordinal_metrics_tell_a_near_miss_from_a_far_one_where_macro_f1_cannot() -> None:
    truth = [1, 2, 3, 4, 5]
    near, far = one_hot([2, 3, 4, 5, 4]), one_hot([5, 5, 5, 1, 1])
    near_metrics, far_metrics = classification_metrics(truth, near), classification_metrics(truth, far)
    assert near_metrics["macro_f1"] == far_metrics["macro_f1"] == 0.0
    assert near_metrics["mae_stars"] == pytest.approx(1.0)  # every rating one star off
    assert far_metrics["mae_stars"] == pytest.approx((4 + 3 + 2 + 3 + 4) / 5)
    assert near_metrics["off_by_one_accuracy"] == 1.0 and far_metrics["off_by_one_accuracy"] == 0.0
    assert near_metrics["quadratic_kappa"] > 0 > far_metrics["quadratic_kappa"]


def test_every_selection_metric_scores_as_reported_and_ranks_a_near_miss_above_a_far_one() -> None:
    truth = [1, 2, 3, 4, 5, 5]
    near, far = one_hot([1, 3, 3, 5, 4, 5]), one_hot([5, 5, 1, 1, 1, 2])
    for metric in SelectionMetric:
        scores = [selection_score(metric, truth, proba) for proba in (near, far)]
        assert scores == [classification_metrics(truth, proba)[metric] for proba in (near, far)]
        assert metric.oriented(scores[0]) > metric.oriented(scores[1]), metric
    assert SelectionMetric.MAE_STARS.direction == "minimize"  # an error: fewer stars off is better
    assert {metric.direction for metric in SelectionMetric if metric != "mae_stars"} == {"maximize"}


def test_a_reversed_scale_scores_kappa_minus_one() -> None:
    # Quadratic weights: observed disagreement 1 (both corners), chance's 0.5 per corner.
    assert quadratic_kappa([1, 5], [5, 1]) == pytest.approx(-1.0)
    assert mae_stars([1, 5], [5, 1]) == 4.0
    assert off_by_one_accuracy([1, 5], [5, 1]) == 0.0


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


def test_with_a_calibration_every_metric_is_of_the_served_probabilities_beside_before_and_after(
    train_df: pd.DataFrame, test_df: pd.DataFrame, tfidf: Tfidf, tmp_path: Path
) -> None:
    model = build_estimator("logreg", {"C": 5.0}, tfidf).fit(train_df, labels_of(train_df))
    truth, raw = labels_of(test_df), model.predict_proba(test_df)
    flatter = TemperatureScaling(2.0)
    result = evaluate(model, test_df, truth, tmp_path, split="test", calibration=flatter)
    assert result.metrics["log_loss_before"] == pytest.approx(log_loss(truth, raw))
    assert result.metrics["log_loss_after"] == pytest.approx(log_loss(truth, flatter.apply(raw)))
    assert result.metrics["ece_after"] == pytest.approx(expected_calibration_error(truth, flatter.apply(raw)))
    assert {"brier_before", "brier_after", "ece_before"} <= set(result.metrics)
    assert result.metrics["macro_f1"] == pytest.approx(classification_metrics(truth, raw)["macro_f1"])
    assert (tmp_path / "test_reliability.png").stat().st_size > 0
    assert "log_loss_after" not in evaluate(model, test_df, truth).metrics
