"""Reads a production dataset in any of the shapes the batch drift check is given: a folder
of scored batches, or a file of raw reviews or of features."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from libs.features import CONTRACT, FeatureContractError, compute_features
from libs.production.batches import LABEL_COLUMN, PROBABILITY_COLUMNS, read_batch_files
from libs.production.parquet_log import since

REVIEW_COLUMN = "reviewText"
SUMMARY_COLUMN = "summary"


@dataclass(frozen=True)
class ProductionData:
    """Feature rows, the model's predicted labels and star probabilities when the data carries
    them, and the batch files left out because they were written under another feature contract.

    `probabilities` are those of the rows that have them (batches written before probabilities
    were logged have none), in row order."""

    features: pd.DataFrame
    predicted_labels: list[str] | None = None
    skipped_files: tuple[Path, ...] = ()
    probabilities: np.ndarray | None = None


def load_production(path: Path, start: datetime | None = None) -> ProductionData:
    """A folder of persisted batches (only those rows stamped at or after `start`, if given),
    or a Parquet/CSV file of raw reviews or of features."""
    path = Path(path)
    if path.is_dir():
        batches = read_batch_files(path)
        return replace(as_production(since(batches.rows, start)), skipped_files=tuple(batches.skipped))
    if path.suffix == ".parquet":
        return as_production(pd.read_parquet(path))
    if path.suffix == ".csv":
        return as_production(pd.read_csv(path, dtype={REVIEW_COLUMN: str, SUMMARY_COLUMN: str}))
    raise ValueError(f"{path}: expected a folder of batches, a .parquet or a .csv file")


def as_production(frame: pd.DataFrame) -> ProductionData:
    """Raw reviews (reviewText[, summary]) get their features computed; features pass through.

    Computing them here with `compute_features` is what keeps them identical to the ones
    the reference was built from.
    """
    labels = frame[LABEL_COLUMN].astype(str).tolist() if LABEL_COLUMN in frame.columns else None
    probabilities = _probabilities(frame)
    if REVIEW_COLUMN in frame.columns:
        summaries = frame[SUMMARY_COLUMN].tolist() if SUMMARY_COLUMN in frame.columns else None
        features = compute_features(frame[REVIEW_COLUMN].tolist(), summaries)
        return ProductionData(features, labels, probabilities=probabilities)
    missing = [name for name in CONTRACT.numeric_names if name not in frame.columns]
    if missing:
        raise FeatureContractError(
            f"production data has neither a {REVIEW_COLUMN!r} column nor the features {missing}"
        )
    return ProductionData(frame, labels, probabilities=probabilities)


def _probabilities(frame: pd.DataFrame) -> np.ndarray | None:
    if not set(PROBABILITY_COLUMNS) <= set(frame.columns):
        return None
    values = frame[list(PROBABILITY_COLUMNS)].to_numpy(dtype=np.float64)
    values = values[np.isfinite(values).all(axis=1)]
    return values if len(values) else None
