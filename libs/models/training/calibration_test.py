"""Fitting and choosing a calibration, and the statistics that judge it."""

import numpy as np
import pytest

from libs.models.calibration import TemperatureScaling
from libs.models.training.calibration import MACRO_F1_TOLERANCE, choose_calibration, fit_temperature
from libs.models.training.evaluation import brier_score, expected_calibration_error, log_loss


def overconfident(temperature: float, rows: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, stars): stars drawn from softmax(logits), probabilities softmax(logits · T)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.0, (rows, 5))
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    stars = np.array([rng.choice(5, p=row) for row in truth]) + 1
    sharp = np.exp(logits * temperature)
    return sharp / sharp.sum(axis=1, keepdims=True), stars


def test_ece_is_the_gap_between_confidence_and_accuracy() -> None:
    # Ten reviews at 0.9 for star 1, six of them right: one bin, |0.6 - 0.9|.
    proba = np.tile([0.9, 0.025, 0.025, 0.025, 0.025], (10, 1))
    stars = np.array([1] * 6 + [2] * 4)
    assert expected_calibration_error(stars, proba) == pytest.approx(0.3)


def test_brier_and_log_loss_of_certain_answers() -> None:
    certain = np.eye(5)[[0, 4]]
    assert brier_score(np.array([1, 5]), certain) == 0.0
    assert brier_score(np.array([2, 4]), certain) == 2.0  # all probability on a wrong star
    assert log_loss(np.array([1, 5]), certain) == pytest.approx(0.0)


def test_the_fitted_temperature_undoes_a_known_overconfidence() -> None:
    proba, stars = overconfident(temperature=3.0)
    fitted = fit_temperature(proba, stars)
    assert fitted.temperature == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(stars, proba)
    assert expected_calibration_error(stars, fitted.apply(proba)) < before / 3


def test_the_chosen_calibration_lowers_ece_on_reviews_it_was_not_fitted_on() -> None:
    proba, stars = overconfident(temperature=3.0)
    chosen = choose_calibration(proba, stars)
    assert set(chosen.cross_validated_log_loss) == {"temperature", "isotonic", "sigmoid"}
    best = min(chosen.cross_validated_log_loss.values())
    assert chosen.cross_validated_log_loss[chosen.calibration.method] == best
    assert chosen.out_of_fold.shape == proba.shape
    assert chosen.after["ece"] < chosen.before["ece"] / 2
    assert chosen.after["log_loss"] < chosen.before["log_loss"]
    metrics = chosen.metrics()
    assert {"val_ece_before", "val_ece_after", "val_brier_before", "val_brier_after"} <= set(metrics)
    # Fresh reviews from the same model: the refitted calibration holds there too.
    fresh, fresh_stars = overconfident(temperature=3.0, seed=1)
    before = expected_calibration_error(fresh_stars, fresh)
    assert expected_calibration_error(fresh_stars, chosen.calibration.apply(fresh)) < before / 2


def test_a_form_that_would_change_the_served_stars_is_not_chosen_even_if_its_log_loss_is_lower() -> None:
    """Ambiguous reviews score 0.5 for 1★ and 0.4 for 5★; one in five is a 1★. The per-star
    maps learn that 5★ is likelier and stop predicting 1★ at all: better log-loss, and
    macro-F1 0.80 instead of 0.85. Temperature scaling keeps every prediction."""
    groups = [
        ([0.02, 0.02, 0.02, 0.04, 0.90], 5, 400),
        ([0.02, 0.02, 0.06, 0.80, 0.10], 4, 100),
        ([0.02, 0.06, 0.80, 0.10, 0.02], 3, 100),
        ([0.06, 0.80, 0.10, 0.02, 0.02], 2, 100),
        ([0.50, 0.02, 0.02, 0.06, 0.40], 1, 20),
        ([0.50, 0.02, 0.02, 0.06, 0.40], 5, 80),
    ]
    proba = np.array([row for row, _, count in groups for _ in range(count)])
    stars = np.array([star for _, star, count in groups for _ in range(count)])
    chosen = choose_calibration(proba, stars)
    losses, scores = chosen.cross_validated_log_loss, chosen.cross_validated_macro_f1
    assert min(losses["isotonic"], losses["sigmoid"]) < losses["temperature"]
    assert max(scores["isotonic"], scores["sigmoid"]) < scores["raw"] - MACRO_F1_TOLERANCE
    assert isinstance(chosen.calibration, TemperatureScaling)
    assert scores["temperature"] == scores["raw"]


def test_too_few_validation_reviews_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 5 validation reviews, got 3"):
        choose_calibration(np.full((3, 5), 0.2), np.array([1, 2, 3]))
