"""libs.drift: PSI drift monitoring of the review features against a training reference.

Public API:

- `ReferenceProfile.build(features, predicted_labels=None, coverage=None, bins=10)`,
  `.save(path)` / `.load(path)` / `to_dict()` / `from_dict()`: what "no drift" looks like.
- `psi(expected, actual, epsilon=PSI_EPSILON)`, `categorical_psi`, `bin_counts`,
  `psi_if_enough`, `band(value, threshold=0.2)` -> `Band`: the statistics, with their
  defaults `PSI_EPSILON`, `DRIFT_THRESHOLD`, `MODERATE_THRESHOLD`, `DEFAULT_MIN_ROWS`.
- `compare(reference, features, predicted_labels=None, coverage=None)` -> `DriftReport`
  (`FeatureDrift`, `LabelDrift`): the batch check.
- `LiveMonitor(reference, registry=..., window_rows=..., window_seconds=..., min_rows=...,
  state_dir=..., webhook_url=...)` with `.observe(features, predicted_labels)`: the service's
  live check, merged over worker processes, published as kindle_drift_* Prometheus metrics.
- `BatchWriter(folder)` / `read_batches(folder)`: scored production batches as Parquet files;
  `FeedbackWriter(folder)` / `read_feedback(folder)`: labelled feedback; `since(frame, start)`.
- `load_production(path)`: a production dataset (raw reviews, features or batch folder).

The batch check's outputs (HTML report, MLflow logging, the CLI) are `libs.drift.reports`.
"""

from libs.drift.batches import (
    BatchWriter,
    FeedbackWriter,
    ProductionSettings,
    read_batches,
    read_feedback,
    since,
)
from libs.drift.compare import DriftReport, FeatureDrift, LabelDrift, compare
from libs.drift.live import LiveMonitor
from libs.drift.production import ProductionData, load_production
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
    "DEFAULT_MIN_ROWS",
    "DRIFT_THRESHOLD",
    "MODERATE_THRESHOLD",
    "PSI_EPSILON",
    "Band",
    "BatchWriter",
    "DriftReport",
    "FeatureBins",
    "FeatureDrift",
    "FeedbackWriter",
    "LabelDrift",
    "LiveMonitor",
    "ProductionData",
    "ProductionSettings",
    "ReferenceProfile",
    "band",
    "bin_counts",
    "categorical_psi",
    "compare",
    "load_production",
    "psi",
    "psi_if_enough",
    "read_batches",
    "read_feedback",
    "since",
]
