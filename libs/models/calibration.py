"""Calibrated star probabilities: a map from a model's probabilities to ones that mean what they say.

A model's confidences are what the service reports and what a label-free performance
estimate is built on: if reviews scored at 0.8 are right 60 % of the time, every estimate
from them is off by that much. Class weights, regularisation and early stopping all
bend them. Each bundle therefore carries a calibration fitted on validation reviews
(`libs.models.training.calibration` fits and chooses it), which `ModelBundle` applies to
every probability it returns, in the service and offline alike.

This module only applies calibrations (numpy; the service imports it). Three forms:
- `TemperatureScaling`: softmax(log p / T). One parameter; never changes the predicted
  star, only how sure the model says it is.
- `IsotonicCalibration`: per star, a monotone step map of that star's probability (one
  star against the rest), then rows renormalised to sum to 1.
- `SigmoidCalibration`: per star, a logistic map a·p + b of that star's probability (Platt
  scaling, one star against the rest), then rows renormalised.
The per-star forms may change the predicted star where they reorder a row's probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

FLOOR = 1e-12
"""Probabilities are floored here before a logarithm, and calibrated rows before they are
renormalised: a row the per-star maps send to all zeros becomes uniform, not NaN."""


class Calibration(Protocol):
    """What a bundle holds: `apply` maps (n, 5) probabilities to calibrated ones."""

    @property
    def method(self) -> str: ...

    def apply(self, proba: np.ndarray) -> np.ndarray: ...

    def to_dict(self) -> dict[str, Any]: ...


def _normalised(proba: np.ndarray) -> np.ndarray:
    floored = np.maximum(proba, FLOOR)
    result: np.ndarray = floored / floored.sum(axis=1, keepdims=True)
    return result


@dataclass(frozen=True)
class TemperatureScaling:
    temperature: float
    method: str = "temperature"

    def apply(self, proba: np.ndarray) -> np.ndarray:
        logits = np.log(np.maximum(np.asarray(proba, dtype=np.float64), FLOOR)) / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        result: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
        return result

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "temperature": self.temperature}


@dataclass(frozen=True)
class IsotonicCalibration:
    thresholds: list[list[float]]  # per star: the probabilities where the step map changes
    values: list[list[float]]  # per star: the calibrated probability at each threshold
    method: str = "isotonic"

    def apply(self, proba: np.ndarray) -> np.ndarray:
        proba = np.asarray(proba, dtype=np.float64)
        mapped = np.column_stack(
            [np.interp(proba[:, k], self.thresholds[k], self.values[k]) for k in range(proba.shape[1])]
        )
        return _normalised(mapped)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "thresholds": self.thresholds, "values": self.values}


@dataclass(frozen=True)
class SigmoidCalibration:
    slopes: list[float]  # per star
    intercepts: list[float]  # per star
    method: str = "sigmoid"

    def apply(self, proba: np.ndarray) -> np.ndarray:
        proba = np.asarray(proba, dtype=np.float64)
        mapped = 1.0 / (1.0 + np.exp(-(proba * np.asarray(self.slopes) + np.asarray(self.intercepts))))
        return _normalised(mapped)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "slopes": self.slopes, "intercepts": self.intercepts}


def _floats(values: Sequence[Any]) -> list[float]:
    return [float(value) for value in values]


def calibration_from_dict(data: Mapping[str, Any], classes: int) -> Calibration:
    """The calibration `to_dict` wrote; ValueError naming what is wrong otherwise."""
    method = data.get("method")
    if method == "temperature":
        temperature = float(data["temperature"])
        if not temperature > 0:
            raise ValueError(f"a calibration temperature must be positive, got {temperature}")
        return TemperatureScaling(temperature)
    if method == "isotonic":
        thresholds = [_floats(row) for row in data["thresholds"]]
        values = [_floats(row) for row in data["values"]]
        if len(thresholds) != classes or [len(r) for r in thresholds] != [len(r) for r in values]:
            raise ValueError(f"an isotonic calibration needs {classes} threshold/value rows of equal lengths")
        return IsotonicCalibration(thresholds, values)
    if method == "sigmoid":
        slopes, intercepts = _floats(data["slopes"]), _floats(data["intercepts"])
        if len(slopes) != classes or len(intercepts) != classes:
            raise ValueError(f"a sigmoid calibration needs {classes} slopes and intercepts")
        return SigmoidCalibration(slopes, intercepts)
    raise ValueError(f"unknown calibration method {method!r}: temperature, isotonic or sigmoid")
