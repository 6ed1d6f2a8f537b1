"""Performance estimated from confidences and realised from labels, by the same confusion-matrix formulas."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from libs.drift.performance import (
    estimate_performance,
    expected_confusion,
    observed_confusion,
    realised_performance,
)


def calibrated_window(rows: int, seed: int, sharpness: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, true stars drawn from exactly those probabilities): perfectly calibrated."""
    rng = np.random.default_rng(seed)
    logits = sharpness * rng.normal(size=(rows, 5))
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    stars = np.array([rng.choice(5, p=row) for row in proba]) + 1
    return proba, stars


def test_realised_metrics_match_scikit_learn_and_mae_counts_stars() -> None:
    rng = np.random.default_rng(0)
    truth, pred = rng.integers(1, 6, 500), rng.integers(1, 6, 500)
    realised = realised_performance(truth, pred)
    assert realised["accuracy"] == pytest.approx(accuracy_score(truth, pred))
    assert realised["macro_f1"] == pytest.approx(
        f1_score(truth, pred, labels=[1, 2, 3, 4, 5], average="macro", zero_division=0)
    )
    assert realised["mae_stars"] == pytest.approx(np.mean(np.abs(truth - pred)))
    # A star never true nor predicted scores 0, as zero_division=0 does.
    only_fives = realised_performance([5, 5], [5, 5])
    assert only_fives["macro_f1"] == pytest.approx(0.2) and only_fives["accuracy"] == 1.0


def test_the_expected_confusion_puts_each_reviews_probabilities_in_its_predicted_column() -> None:
    proba = np.array([[0.7, 0.3, 0, 0, 0], [0.2, 0.8, 0, 0, 0], [0, 0, 0, 0.4, 0.6]])
    expected = expected_confusion(proba)
    assert expected.sum() == pytest.approx(3.0)
    np.testing.assert_allclose(expected[:, 0], proba[0])
    np.testing.assert_allclose(expected[:, 1], proba[1])
    np.testing.assert_allclose(expected[:, 4], proba[2])
    estimate = estimate_performance(proba)
    assert estimate.values["accuracy"] == pytest.approx((0.7 + 0.8 + 0.6) / 3)
    assert estimate.values["mae_stars"] == pytest.approx((0.3 * 1 + 0.2 * 1 + 0.4 * 1) / 3)


def test_on_calibrated_probabilities_the_estimate_lands_on_the_realised_values() -> None:
    covered = {"accuracy": 0, "macro_f1": 0, "mae_stars": 0}
    for seed in range(20):
        proba, stars = calibrated_window(1000, seed)
        estimate = estimate_performance(proba, seed=seed)
        realised = realised_performance(stars, proba.argmax(axis=1) + 1)
        for name, value in realised.items():
            assert estimate.values[name] == pytest.approx(value, abs=0.05)
            covered[name] += estimate.low[name] <= value <= estimate.high[name]
    assert all(count >= 16 for count in covered.values()), covered  # a 95 % interval, 20 windows


def test_overconfident_probabilities_overestimate_accuracy() -> None:
    """The estimate trusts the probabilities: without calibration it is optimistic."""
    proba, stars = calibrated_window(2000, seed=1)
    sharp = proba**3 / (proba**3).sum(axis=1, keepdims=True)
    realised = realised_performance(stars, sharp.argmax(axis=1) + 1)["accuracy"]
    assert estimate_performance(sharp).values["accuracy"] > realised + 0.05


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match=r"must be \(n, 5\), got shape \(2, 3\)"):
        estimate_performance(np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="zero reviews"):
        estimate_performance(np.empty((0, 5)))
    with pytest.raises(ValueError, match=r"true stars must be 1-5, got \[0, 6\]"):
        observed_confusion([0, 6, 3], [1, 2, 3])
