"""Batch comparison of a production dataset with the reference: the typed drift report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from libs.drift.profile import FeatureBins, ReferenceProfile, label_counts
from libs.drift.psi import (
    DEFAULT_MIN_ROWS,
    DRIFT_THRESHOLD,
    Band,
    band,
    categorical_psi,
    psi_if_enough,
)
from libs.features import FeatureContractError


@dataclass(frozen=True)
class FeatureDrift:
    """PSI of one feature; `psi` is None when there were too few rows to judge."""

    name: str
    psi: float | None
    band: Band
    drift: bool
    rows: int
    edges: tuple[float, ...]
    expected: tuple[float, ...]
    actual: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "psi": self.psi,
            "band": self.band.label,
            "drift": self.drift,
            "rows": self.rows,
            "edges": list(self.edges),
            "expected": list(self.expected),
            "actual": list(self.actual),
        }


@dataclass(frozen=True)
class LabelDrift:
    """Prediction drift: PSI between predicted-label shares now and on validation."""

    psi: float | None
    band: Band
    expected: dict[str, float]
    actual: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"psi": self.psi, "band": self.band.label, "expected": self.expected, "actual": self.actual}


@dataclass(frozen=True)
class DriftReport:
    """Per-feature PSI and the decision; `retrain` is max feature PSI > threshold."""

    features: tuple[FeatureDrift, ...]
    rows: int
    threshold: float
    min_rows: int
    prediction: LabelDrift | None = None
    reference_coverage: float | None = None
    coverage: float | None = None

    @property
    def max_psi(self) -> float | None:
        values = [f.psi for f in self.features if f.psi is not None]
        return max(values) if values else None

    @property
    def state(self) -> Band:
        return band(self.max_psi, self.threshold)

    @property
    def retrain(self) -> bool:
        return self.max_psi is not None and self.max_psi > self.threshold

    def feature(self, name: str) -> FeatureDrift:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "threshold": self.threshold,
            "min_rows": self.min_rows,
            "max_psi": self.max_psi,
            "state": self.state.label,
            "retrain": self.retrain,
            "features": [f.to_dict() for f in self.features],
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
            "reference_coverage": self.reference_coverage,
            "coverage": self.coverage,
        }


def compare(
    reference: ReferenceProfile,
    production: pd.DataFrame,
    predicted_labels: Sequence[object] | None = None,
    coverage: float | None = None,
    threshold: float = DRIFT_THRESHOLD,
    min_rows: int = DEFAULT_MIN_ROWS,
) -> DriftReport:
    """Compares production features (columns named by the contract) with the reference.

    `coverage` is the production vocabulary coverage (`Tfidf.coverage`), reported beside
    the reference's. Defaults: threshold 0.2, min_rows 200 (see `libs.drift.psi`).
    """
    missing = [name for name in reference.names if name not in production.columns]
    if missing:
        raise FeatureContractError(f"production data lacks feature columns {missing}")
    drifts = tuple(
        feature_drift(bins, bins.counts(production[bins.name]), threshold, min_rows)
        for bins in reference.features
    )
    return DriftReport(
        features=drifts,
        rows=len(production),
        threshold=threshold,
        min_rows=min_rows,
        prediction=label_drift(
            reference.labels,
            label_counts(() if predicted_labels is None else predicted_labels),
            threshold,
            min_rows,
        ),
        reference_coverage=reference.coverage,
        coverage=coverage,
    )


def feature_drift(
    bins: FeatureBins,
    counts: np.ndarray,
    threshold: float = DRIFT_THRESHOLD,
    min_rows: int = DEFAULT_MIN_ROWS,
) -> FeatureDrift:
    """Drift of one feature from its production bin counts (batch or summed live windows)."""
    rows = int(counts.sum())
    value = psi_if_enough(bins.expected, counts, min_rows)
    actual = tuple((counts / rows).tolist()) if rows else tuple(0.0 for _ in counts)
    state = band(value, threshold)
    return FeatureDrift(bins.name, value, state, state is Band.DRIFT, rows, bins.edges, bins.expected, actual)


def label_drift(
    expected: Mapping[str, float],
    counts: Mapping[str, int],
    threshold: float = DRIFT_THRESHOLD,
    min_rows: int = DEFAULT_MIN_ROWS,
) -> LabelDrift | None:
    """Prediction drift, or None when the reference or the production side has no labels."""
    rows = sum(counts.values())
    if not expected or rows == 0:
        return None
    actual = {label: count / rows for label, count in sorted(counts.items())}
    value = categorical_psi(expected, actual) if rows >= max(min_rows, 1) else None
    return LabelDrift(value, band(value, threshold), dict(expected), actual)
