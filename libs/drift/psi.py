"""The drift statistics: named functions with their defaults stated, as Evidently does.

PSI (population stability index) compares the share of rows per bin in production
(`a`) with the share the reference expected (`e`):

    PSI = Σ (a − e) · ln(a / e)

Every term is ≥ 0 (a − e and ln(a / e) always share a sign), so PSI ≥ 0 and is 0 only
when the distributions agree bin for bin.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

import numpy as np
from numpy.typing import ArrayLike

# A share of 0 makes ln(a / e) infinite. Shares are floored at 1e-4 (one row in ten
# thousand): a bin empty on both sides still contributes exactly 0, while a bin empty
# on one side contributes a large but finite term (ln(a / 1e-4) ≤ 9.2), so a single
# new category or out-of-range value cannot turn the whole index into infinity.
PSI_EPSILON = 1e-4

# The conventional bands: < 0.1 stable, 0.1–0.2 moderate, > 0.2 drift (retrain).
DRIFT_THRESHOLD = 0.2
MODERATE_THRESHOLD = 0.1

# Without drift PSI is still about (bins − 1) · (1/n + 1/m) from sampling noise alone,
# so with 10 bins and fewer than ~200 production rows noise reaches the moderate band.
# Below this many rows PSI is "insufficient data", never a reassuring 0.
DEFAULT_MIN_ROWS = 200


class Band(Enum):
    """Drift band of one PSI value; `code` is the number the Prometheus gauge shows."""

    INSUFFICIENT = ("insufficient", -1)
    STABLE = ("stable", 0)
    MODERATE = ("moderate", 1)
    DRIFT = ("drift", 2)

    def __init__(self, label: str, code: int) -> None:
        self.label = label
        self.code = code


def psi(expected: ArrayLike, actual: ArrayLike, epsilon: float = PSI_EPSILON) -> float:
    """PSI of two distributions over the same bins, given as counts or shares.

    Each side is normalised to shares first, so raw bin counts can be passed directly;
    then shares are floored at `epsilon` (default `PSI_EPSILON` = 1e-4).
    """
    e = _shares(expected, "expected")
    a = _shares(actual, "actual")
    if e.shape != a.shape:
        raise ValueError(f"expected has {e.size} bins, actual has {a.size}")
    e = np.maximum(e, epsilon)
    a = np.maximum(a, epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def categorical_psi(
    expected: Mapping[str, float], actual: Mapping[str, float], epsilon: float = PSI_EPSILON
) -> float:
    """PSI over named categories (predicted labels); a category one side lacks counts as 0."""
    categories = sorted(set(expected) | set(actual))
    return psi([expected.get(c, 0.0) for c in categories], [actual.get(c, 0.0) for c in categories], epsilon)


def bin_counts(values: ArrayLike, edges: ArrayLike) -> np.ndarray:
    """Rows per bin for interior `edges`: bins (−∞, e₁], (e₁, e₂], …, (eₖ, +∞).

    The outer bins are open-ended so values outside the reference range are counted,
    not dropped; non-finite values belong to no bin.
    """
    data = np.asarray(values, dtype=np.float64)
    data = data[np.isfinite(data)]
    cuts = np.asarray(edges, dtype=np.float64)
    return np.bincount(np.searchsorted(cuts, data, side="left"), minlength=cuts.size + 1)


def psi_if_enough(
    expected: ArrayLike, actual_counts: ArrayLike, min_rows: int = DEFAULT_MIN_ROWS
) -> float | None:
    """PSI of production bin counts, or None ("insufficient data") below `min_rows` rows.

    Default `min_rows` = `DEFAULT_MIN_ROWS` (200).
    """
    counts = np.asarray(actual_counts, dtype=np.float64)
    if counts.sum() < max(min_rows, 1):
        return None
    return psi(expected, counts)


def band(
    value: float | None, threshold: float = DRIFT_THRESHOLD, moderate: float = MODERATE_THRESHOLD
) -> Band:
    """Band of a PSI value: > `threshold` (0.2) drift, ≥ `moderate` (0.1) moderate, else stable.

    None (too few rows) is `Band.INSUFFICIENT`. The moderate band is [min(moderate, threshold),
    threshold], so a threshold set below 0.1 narrows it rather than inverting it.
    """
    if value is None:
        return Band.INSUFFICIENT
    if value > threshold:
        return Band.DRIFT
    if value >= min(moderate, threshold):
        return Band.MODERATE
    return Band.STABLE


def _shares(values: ArrayLike, side: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{side} must be a non-empty 1-d sequence of bin counts or shares")
    if not np.isfinite(array).all() or (array < 0).any():
        raise ValueError(f"{side} has negative or non-finite entries")
    total = array.sum()
    if total <= 0:
        raise ValueError(f"{side} is all zeros: no rows to compare")
    return array / total
