"""Fits a candidate's calibration on validation reviews, chooses its form, and measures it.

How good a calibration is: `evaluation.calibration_metrics` (ECE, Brier score, log-loss).

The form (`choose_calibration`): temperature scaling, isotonic or sigmoid, whichever has
the lowest log-loss on validation reviews it was not fitted on (`FOLDS`-fold
cross-validation within the validation split). Scored on the reviews they were fitted on,
the flexible per-star maps would always win. A form must also keep the predicted stars'
macro-F1 within `MACRO_F1_TOLERANCE` of the raw probabilities' (out of fold too):
calibration is there to make confidences honest, not to change which star is served.
The per-star maps can: on a class-weighted model they undo part of the weighting and
move predictions to 5★ (logistic regression on Kindle reviews: sigmoid cut test macro-F1
from 0.492 to 0.481). Temperature scaling never changes a prediction, so it always
qualifies. The chosen form is then refitted on the whole validation split. The "after"
figures come from the same out-of-fold probabilities, so they are what unseen reviews
should see, not the fit's own residue.

Which validation probabilities: the candidate's own where it was trained on the training
split alone (the transformer's best trial, the ensemble's blend), else those of the
search's best trial, the same configuration fitted on the training split. A candidate
refitted on train + validation has seen those reviews, so its own would look better
calibrated than it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold

from libs.models.calibration import (
    FLOOR,
    Calibration,
    IsotonicCalibration,
    SigmoidCalibration,
    TemperatureScaling,
)
from libs.models.training.evaluation import calibration_metrics, label_columns, log_loss, macro_f1

FOLDS = 5
MACRO_F1_TOLERANCE = 0.005
"""How much out-of-fold macro-F1 a form may cost against the raw probabilities."""
TEMPERATURE_RANGE = (0.05, 20.0)
"""Temperatures searched: from sharpening twentyfold to flattening twentyfold."""


def fit_temperature(proba: np.ndarray, y_true: np.ndarray) -> TemperatureScaling:
    """The temperature of least log-loss (a convex problem in log T, solved by bounded search)."""
    low, high = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    result = minimize_scalar(
        lambda log_t: log_loss(y_true, TemperatureScaling(float(np.exp(log_t))).apply(proba)),
        bounds=(low, high),
        method="bounded",
    )
    return TemperatureScaling(float(np.exp(result.x)))


def fit_isotonic(proba: np.ndarray, y_true: np.ndarray) -> IsotonicCalibration:
    columns = label_columns(y_true)
    thresholds, values = [], []
    for k in range(proba.shape[1]):
        fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        fitted.fit(proba[:, k], (columns == k).astype(float))
        thresholds.append([float(x) for x in fitted.X_thresholds_])
        values.append([float(y) for y in fitted.y_thresholds_])
    return IsotonicCalibration(thresholds, values)


def fit_sigmoid(proba: np.ndarray, y_true: np.ndarray) -> SigmoidCalibration:
    columns = label_columns(y_true)
    slopes, intercepts = [], []
    for k in range(proba.shape[1]):
        positive = columns == k
        if positive.all() or not positive.any():
            # One outcome only: a flat map to that outcome's rate (a logistic fit is undefined).
            rate = float(np.clip(positive.mean(), FLOOR, 1 - FLOOR))
            slopes.append(0.0)
            intercepts.append(float(np.log(rate / (1 - rate))))
            continue
        fitted = LogisticRegression(C=1e6, max_iter=1000).fit(proba[:, [k]], positive)
        slopes.append(float(fitted.coef_[0, 0]))
        intercepts.append(float(fitted.intercept_[0]))
    return SigmoidCalibration(slopes, intercepts)


FITTERS: dict[str, Callable[[np.ndarray, np.ndarray], Calibration]] = {
    "temperature": fit_temperature,
    "isotonic": fit_isotonic,
    "sigmoid": fit_sigmoid,
}


@dataclass(frozen=True)
class ChosenCalibration:
    calibration: Calibration  # the chosen form, refitted on the whole validation split
    cross_validated_log_loss: dict[str, float]  # per form
    cross_validated_macro_f1: dict[str, float]  # per form, and "raw"
    out_of_fold: np.ndarray  # the chosen form's calibrated validation probabilities, out of fold
    before: dict[str, float]  # calibration_metrics of the raw validation probabilities
    after: dict[str, float]  # calibration_metrics of `out_of_fold`

    def metrics(self, prefix: str = "val_") -> dict[str, float]:
        """Flat metrics for MLflow and the bundle: `val_ece_before`, `val_ece_after`, ..."""
        result = {f"{prefix}{name}_before": value for name, value in self.before.items()}
        return result | {f"{prefix}{name}_after": value for name, value in self.after.items()}


def _out_of_fold(method: str, proba: np.ndarray, y_true: np.ndarray, seed: int) -> np.ndarray:
    calibrated = np.empty_like(proba)
    for fit_rows, score_rows in KFold(FOLDS, shuffle=True, random_state=seed).split(proba):
        fitted = FITTERS[method](proba[fit_rows], y_true[fit_rows])
        calibrated[score_rows] = fitted.apply(proba[score_rows])
    return calibrated


def choose_calibration(proba: np.ndarray, y_true: np.ndarray, seed: int = 0) -> ChosenCalibration:
    """The form of least cross-validated log-loss among those that keep macro-F1, refitted on
    all of these validation probabilities. Raises ValueError below `FOLDS` rows."""
    proba = np.asarray(proba, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=int)
    if len(proba) < FOLDS:
        raise ValueError(f"calibration needs at least {FOLDS} validation reviews, got {len(proba)}")
    held_out = {method: _out_of_fold(method, proba, y_true, seed) for method in FITTERS}
    losses = {method: log_loss(y_true, calibrated) for method, calibrated in held_out.items()}
    scores = {"raw": macro_f1(y_true, proba)}
    scores |= {method: macro_f1(y_true, calibrated) for method, calibrated in held_out.items()}
    keep = [method for method in FITTERS if scores[method] >= scores["raw"] - MACRO_F1_TOLERANCE]
    best = min(keep, key=lambda method: (losses[method], method != "temperature"))
    return ChosenCalibration(
        calibration=FITTERS[best](proba, y_true),
        cross_validated_log_loss=losses,
        cross_validated_macro_f1=scores,
        out_of_fold=held_out[best],
        before=calibration_metrics(y_true, proba),
        after=calibration_metrics(y_true, held_out[best]),
    )
