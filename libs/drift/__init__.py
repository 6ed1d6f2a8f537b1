"""libs.drift: PSI drift monitoring of the review features against a training reference.

Public API:

- `ReferenceProfile.build(features, predicted_labels=None, coverage=None, bins=10, texts=())`,
  `.save(path)` / `.load(path)` / `to_dict()` / `from_dict()`: what "no drift" looks like.
- `psi(expected, actual, epsilon=PSI_EPSILON)`, `categorical_psi`, `bin_counts`,
  `psi_if_enough`, `band(value, threshold=0.2)` -> `Band`: the statistics, with their
  defaults `PSI_EPSILON`, `DRIFT_THRESHOLD`, `MODERATE_THRESHOLD`, `DEFAULT_MIN_ROWS`.
- `compare(reference, features, predicted_labels=None, coverage=None)` -> `DriftReport`
  (`FeatureDrift`, `LabelDrift`): the batch check.
- `estimate_performance(proba, draws=200, seed=0)` -> `PerformanceEstimate` and
  `realised_performance(y_true, y_pred)`: accuracy, macro-F1 and MAE in stars of a window of
  scored reviews, estimated from calibrated probabilities or realised from labels, by the
  same confusion-matrix formulas (`libs.drift.performance`); `check_performance(proba,
  feedback_proba, feedback_stars, reference, max_drop=DEFAULT_MAX_DROP)` -> `PerformanceCheck`:
  both for one window, how far apart they are, and whether the model got worse.
- `LiveMonitor(reference, registry=..., window_rows=..., window_seconds=..., min_rows=...,
  state_dir=..., webhook_url=...)` with `.observe(features, predicted_labels)`: the service's
  live check, merged over worker processes, published as kindle_drift_* Prometheus metrics.

The batch check's outputs (HTML report, MLflow logging, the CLI) are `libs.drift.reports`;
text drift by a domain classifier (scikit-learn, not served) is `libs.drift.domain`.
The production data it reads (scored batches, labelled feedback) is `libs.production`.
"""

from libs.drift.compare import DriftReport, FeatureDrift, LabelDrift, compare
from libs.drift.live import LiveMonitor
from libs.drift.performance import (
    DEFAULT_MAX_DROP,
    PerformanceCheck,
    PerformanceEstimate,
    check_performance,
    estimate_performance,
    realised_performance,
)
from libs.drift.profile import FeatureBins, ReferenceProfile
from libs.drift.psi import (
    DEFAULT_MIN_ROWS,
    DRIFT_THRESHOLD,
    MODERATE_THRESHOLD,
    PSI_EPSILON,
    Band,
    band,
    bin_counts,
    categorical_psi,
    psi,
    psi_if_enough,
)

__all__ = [
    "DEFAULT_MAX_DROP",
    "DEFAULT_MIN_ROWS",
    "DRIFT_THRESHOLD",
    "MODERATE_THRESHOLD",
    "PSI_EPSILON",
    "Band",
    "DriftReport",
    "FeatureBins",
    "FeatureDrift",
    "LabelDrift",
    "LiveMonitor",
    "PerformanceCheck",
    "PerformanceEstimate",
    "ReferenceProfile",
    "band",
    "bin_counts",
    "categorical_psi",
    "check_performance",
    "compare",
    "estimate_performance",
    "psi",
    "psi_if_enough",
    "realised_performance",
]
