"""Applying a bundle's calibration: what each form does to probabilities, and its stored form."""

import numpy as np
import pytest

from libs.models.calibration import (
    IsotonicCalibration,
    SigmoidCalibration,
    TemperatureScaling,
    calibration_from_dict,
)

PROBA = np.array([[0.70, 0.10, 0.10, 0.05, 0.05], [0.05, 0.05, 0.20, 0.30, 0.40], [0.2, 0.2, 0.2, 0.2, 0.2]])


def test_temperature_flattens_or_sharpens_without_changing_the_predicted_star() -> None:
    flat, sharp = TemperatureScaling(2.0).apply(PROBA), TemperatureScaling(0.5).apply(PROBA)
    for calibrated in (flat, sharp):
        np.testing.assert_allclose(calibrated.sum(axis=1), 1.0)
        assert (calibrated[:2].argmax(axis=1) == PROBA[:2].argmax(axis=1)).all()
    assert flat[0, 0] < PROBA[0, 0] < sharp[0, 0]
    np.testing.assert_allclose(TemperatureScaling(1.0).apply(PROBA), PROBA)
    # softmax(log p / 2) is p^(1/2), renormalised
    expected = np.sqrt(PROBA[0]) / np.sqrt(PROBA[0]).sum()
    np.testing.assert_allclose(flat[0], expected)


def test_isotonic_maps_each_star_through_its_steps_then_renormalises() -> None:
    identity = IsotonicCalibration([[0.0, 1.0]] * 5, [[0.0, 1.0]] * 5)
    np.testing.assert_allclose(identity.apply(PROBA), PROBA)
    halved_first = IsotonicCalibration([[0.0, 1.0]] * 5, [[0.0, 0.5], *[[0.0, 1.0]] * 4])
    row = halved_first.apply(PROBA[:1])[0]
    expected = np.array([0.35, 0.10, 0.10, 0.05, 0.05]) / 0.65
    np.testing.assert_allclose(row, expected)


def test_a_row_mapped_to_all_zeros_becomes_uniform_not_nan() -> None:
    zeros = IsotonicCalibration([[0.0, 1.0]] * 5, [[0.0, 0.0]] * 5)
    np.testing.assert_allclose(zeros.apply(PROBA), np.full(PROBA.shape, 0.2))


def test_sigmoid_is_a_logistic_map_per_star() -> None:
    calibration = SigmoidCalibration([4.0] * 5, [-2.0] * 5)
    mapped = 1 / (1 + np.exp(-(4.0 * PROBA - 2.0)))
    np.testing.assert_allclose(calibration.apply(PROBA), mapped / mapped.sum(axis=1, keepdims=True))


@pytest.mark.parametrize(
    "calibration",
    [
        TemperatureScaling(1.7),
        IsotonicCalibration([[0.0, 0.5, 1.0]] * 5, [[0.1, 0.4, 0.9]] * 5),
        SigmoidCalibration([1.0, 2.0, 3.0, 4.0, 5.0], [0.0, -1.0, -2.0, -3.0, -4.0]),
    ],
)
def test_each_form_round_trips_through_its_dict(calibration: object) -> None:
    loaded = calibration_from_dict(calibration.to_dict(), 5)  # type: ignore[attr-defined]
    assert loaded == calibration
    np.testing.assert_array_equal(loaded.apply(PROBA), calibration.apply(PROBA))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"method": "platt"}, "unknown calibration method 'platt'"),
        ({"method": "temperature", "temperature": 0}, "must be positive"),
        ({"method": "sigmoid", "slopes": [1.0], "intercepts": [0.0]}, "needs 5 slopes"),
        ({"method": "isotonic", "thresholds": [[0.0]] * 5, "values": [[0.0, 1.0]] * 5}, "equal lengths"),
    ],
)
def test_a_calibration_this_code_cannot_apply_is_named(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        calibration_from_dict(data, 5)
