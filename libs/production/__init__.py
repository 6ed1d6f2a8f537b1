"""libs.production: the data production leaves behind, written by the service and read by
the drift check and retraining.

Public API:

- `BatchWriter(folder, keep_text=False, ...)` / `read_batches(folder)`: scored production
  batches (numeric features, predicted label, its star probabilities in `PROBABILITY_COLUMNS`,
  model version, time; the text only with `keep_text`) as rotating Parquet files.
- `FeedbackWriter(folder, ...)` / `read_feedback(folder)`: labelled feedback (review,
  summary, true stars, request id, client, model version, time).
- `ParquetLog(folder, prefix, rows_per_file=5000, seconds_per_file=300, max_bytes=2**30,
  max_age_s=None, clock=time.time, strict=False, on_drop=None, scan_interval_s=10.0)`: the
  rotating, atomic Parquet log both are made of, kept within `max_bytes` and `max_age_s`
  (oldest files first); `on_drop(rows, reason)` hears of rows it could not write, the
  reason `DROPPED_DISK` (an OSError) or `DROPPED_ERROR` (any other failure).
- `since(frame, start, strict=False)`: the rows of a log stamped at or after `start`.
- `load_production(path, start=None)` -> `ProductionData`: a production dataset (raw
  reviews, features or a batch folder) as features, predicted labels and probabilities.
- `ProductionSettings`: `KINDLE_BATCH_DIR`, `KINDLE_FEEDBACK_DIR` and their retention
  (`KINDLE_{BATCH,FEEDBACK}_MAX_BYTES`, `..._MAX_AGE_DAYS`); `age_seconds(days)` turns the
  latter into `max_age_s`.
"""

from libs.production.batches import LABEL_COLUMN, PROBABILITY_COLUMNS, BatchWriter, read_batches
from libs.production.datasets import ProductionData, load_production
from libs.production.feedback import FeedbackWriter, read_feedback
from libs.production.parquet_log import (
    DROPPED_DISK,
    DROPPED_ERROR,
    TIME_COLUMN,
    VERSION_COLUMN,
    ParquetLog,
    since,
)
from libs.production.settings import ProductionSettings, age_seconds

__all__ = [
    "DROPPED_DISK",
    "DROPPED_ERROR",
    "LABEL_COLUMN",
    "PROBABILITY_COLUMNS",
    "TIME_COLUMN",
    "VERSION_COLUMN",
    "BatchWriter",
    "FeedbackWriter",
    "ParquetLog",
    "ProductionData",
    "ProductionSettings",
    "age_seconds",
    "load_production",
    "read_batches",
    "read_feedback",
    "since",
]
