"""Scored production batches: what the service scored, kept for the batch drift check.

Per row: the contract's numeric features, the predicted label and the star probabilities
it was chosen from (`PROBABILITY_COLUMNS`: what the drift check estimates performance
from), the serving model's version and a UTC timestamp; raw text only when `keep_text`
is set (reviews are customer data). Files carry the contract hash, and reading skips (and
counts) those of another contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from libs.features import CONTRACT, TEXT_COLUMN, FeatureContractError
from libs.production.parquet_log import LogRead, ParquetLog, read_log

LABEL_COLUMN = "predicted_label"
PROBABILITY_COLUMNS = tuple(f"probability_{star}" for star in range(1, 6))
"""The served (calibrated) probability of each star, 1 to 5."""
BATCH_PREFIX = "batch"


class BatchWriter(ParquetLog):
    """Scored production batches: numeric features, predicted label, model version, time."""

    def __init__(self, folder: Path, keep_text: bool = False, **options: Any) -> None:
        super().__init__(folder, BATCH_PREFIX, **options)
        self.keep_text = keep_text

    def write(
        self,
        features: pd.DataFrame,
        predicted_labels: Sequence[object] | None = None,
        model_version: str | None = None,
        probabilities: np.ndarray | None = None,
    ) -> None:
        missing = [name for name in CONTRACT.numeric_names if name not in features.columns]
        if self.keep_text and TEXT_COLUMN not in features.columns:
            missing.append(TEXT_COLUMN)
        if missing:
            raise FeatureContractError(f"batch lacks feature columns {missing}")
        columns = CONTRACT.numeric_names + ([TEXT_COLUMN] if self.keep_text else [])
        # One frame built from its columns (positional arrays), not a copy grown column by column.
        rows: dict[str, Any] = {name: features[name].array for name in columns}
        if predicted_labels is not None:
            rows[LABEL_COLUMN] = [str(label) for label in predicted_labels]
        if probabilities is not None:
            if probabilities.shape != (len(features), len(PROBABILITY_COLUMNS)):
                raise ValueError(f"probabilities of shape {probabilities.shape} for {len(features)} rows")
            for column, values in zip(PROBABILITY_COLUMNS, probabilities.T, strict=True):
                rows[column] = values.astype(np.float64)
        self.append(pd.DataFrame(rows), model_version)


def read_batches(folder: Path) -> pd.DataFrame:
    """All persisted batches of a folder, oldest first, but for files of another contract."""
    return read_batch_files(folder).rows


def read_batch_files(folder: Path) -> LogRead:
    """The batches of a folder (`.rows`) and the files of another contract left out (`.skipped`)."""
    return read_log(folder, BATCH_PREFIX, check_contract=True)
