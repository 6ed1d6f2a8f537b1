"""The scored production batches the service keeps for the batch drift check.

What was scored (the numeric contract features, the predicted label, the version of the
model that served it, the time) goes to `KINDLE_BATCH_DIR` as `libs.production` batch
files, which the drift workflow compares with the champion's reference; unset, nothing
is written. Rows arrive off the request path (today from the drift feed's thread, which
has gathered them already) and a write never fails its caller: the writer logs and counts
what it could not write. Workers share the folder; file names carry the process id.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from libs.production import BatchWriter
from services.settings import ServiceSettings


class BatchLog:
    """Scored rows to `KINDLE_BATCH_DIR`, in files of `KINDLE_BATCH_ROWS_PER_FILE` rows or
    `KINDLE_BATCH_SECONDS_PER_FILE` seconds; does nothing when the folder is unset."""

    def __init__(self, settings: ServiceSettings) -> None:
        self._writer = (
            BatchWriter(
                Path(settings.batch_dir),
                rows_per_file=settings.batch_rows_per_file,
                seconds_per_file=settings.batch_seconds_per_file,
            )
            if settings.batch_dir
            else None
        )

    def write(self, features: pd.DataFrame, labels: list[int], model_version: str | None) -> None:
        """Buffers scored rows (`features` in `CONTRACT.numeric_names` columns, one label per row)."""
        if self._writer is not None:
            self._writer.write(features, labels, model_version)

    def close(self) -> None:
        """Writes what is buffered."""
        if self._writer is not None:
            self._writer.close()
