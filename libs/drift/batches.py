"""Production data persisted as rotating Parquet files: scored batches and labelled feedback.

`BatchWriter` keeps what was scored (the contract's numeric features, the predicted label,
the serving model's version and a UTC timestamp per row; raw text only when `keep_text`
is set: reviews are customer data) for the batch drift check. `FeedbackWriter` keeps
labelled reviews (text, summary, true star rating, the request it answers, the model
version that served it and the time) for retraining. Both are a `ParquetLog`: rows are
buffered, a file is written atomically every `rows_per_file` rows or `seconds_per_file`,
and only the newest `max_files` are kept, so disk use is bounded. Monitoring must never
take the service down: a full disk or an unwritable folder is a logged warning and the
buffered rows are dropped (and counted), never an exception.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from libs.features import CONTRACT, TEXT_COLUMN, FeatureContractError
from libs.features.atomic import atomic_path

logger = logging.getLogger("libs.drift.batches")

LABEL_COLUMN = "predicted_label"
TIME_COLUMN = "timestamp"
VERSION_COLUMN = "model_version"
HASH_KEY = b"kindle_contract_hash"
BATCH_PREFIX = "batch"
FEEDBACK_PREFIX = "feedback"
FEEDBACK_COLUMNS = ("reviewText", "summary", "overall", "request_id")
DEFAULT_ROWS_PER_FILE = 5_000
DEFAULT_SECONDS_PER_FILE = 300.0
DEFAULT_MAX_FILES = 1_000


class ProductionSettings(BaseSettings):
    """Where the service writes production data and the drift check reads it (env prefix `KINDLE_`)."""

    model_config = SettingsConfigDict(env_prefix="KINDLE_", extra="ignore", frozen=True)

    batch_dir: str | None = Field(
        None,
        description="Folder of the scored production batches (Parquet): the service writes, "
        "the drift check reads.",
    )
    feedback_dir: str | None = Field(
        None,
        description="Folder of the labelled feedback (Parquet, one file per request): the service writes "
        "(unset: its feedback API answers 503), retraining reads.",
    )


class ParquetLog:
    """Buffers rows and writes `<prefix>-<time>-<pid>-<n>.parquet` files atomically.

    Defaults: a file per 5,000 rows or 300 s (checked on each append, and on `close()`),
    the newest 1,000 files kept (None: all). A write that fails is logged and its rows
    counted in `dropped_rows`; with `strict` the error is raised as well (for data the
    caller must not acknowledge unless it is on disk).
    """

    def __init__(
        self,
        folder: Path,
        prefix: str,
        rows_per_file: int = DEFAULT_ROWS_PER_FILE,
        seconds_per_file: float = DEFAULT_SECONDS_PER_FILE,
        max_files: int | None = DEFAULT_MAX_FILES,
        clock: Callable[[], float] = time.time,
        strict: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.prefix = prefix
        self.strict = strict
        self.rows_per_file = max(rows_per_file, 1)
        self.seconds_per_file = seconds_per_file
        self.max_files = max_files
        self.clock = clock
        self.dropped_rows = 0
        self._buffer: list[pd.DataFrame] = []
        self._buffered = 0
        self._first = 0.0
        self._sequence = 0
        self._lock = threading.Lock()

    def append(self, rows: pd.DataFrame, model_version: str | None = None) -> None:
        """Adds rows stamped with the time and the model version that served them."""
        now = self.clock()
        rows = rows.reset_index(drop=True)
        rows.insert(0, TIME_COLUMN, pd.Timestamp(datetime.fromtimestamp(now, UTC)))
        rows[VERSION_COLUMN] = model_version
        with self._lock:
            if not self._buffer:
                self._first = now
            self._buffer.append(rows)
            self._buffered += len(rows)
            if self._buffered >= self.rows_per_file or now - self._first >= self.seconds_per_file:
                self._flush()

    def close(self) -> None:
        with self._lock:
            self._flush()

    def __enter__(self) -> ParquetLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _flush(self) -> None:
        if not self._buffer:
            return
        frame = pd.concat(self._buffer, ignore_index=True)
        self._buffer, self._buffered = [], 0
        self._sequence += 1
        stamp = datetime.fromtimestamp(self._first, UTC).strftime("%Y%m%dT%H%M%S%f")
        path = self.folder / f"{self.prefix}-{stamp}-{os.getpid()}-{self._sequence:06d}.parquet"
        try:
            _write_atomically(frame, path)
            self._rotate()
        except (OSError, pa.ArrowException) as error:
            self.dropped_rows += len(frame)
            logger.warning("%d %s rows not written to %s: %s", len(frame), self.prefix, self.folder, error)
            if self.strict:
                raise

    def _rotate(self) -> None:
        if self.max_files is None:
            return
        files = sorted(self.folder.glob(f"{self.prefix}-*.parquet"))
        for old in files[: max(len(files) - self.max_files, 0)]:
            old.unlink(missing_ok=True)


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
    ) -> None:
        missing = [name for name in CONTRACT.numeric_names if name not in features.columns]
        if missing:
            raise FeatureContractError(f"batch lacks feature columns {missing}")
        columns = CONTRACT.numeric_names + ([TEXT_COLUMN] if self.keep_text else [])
        rows = features[columns].copy()
        if predicted_labels is not None:
            rows[LABEL_COLUMN] = [str(label) for label in predicted_labels]
        self.append(rows, model_version)


class FeedbackWriter(ParquetLog):
    """Labelled reviews from production: text, summary, true stars, the request they answer."""

    def __init__(self, folder: Path, **options: Any) -> None:
        super().__init__(folder, FEEDBACK_PREFIX, **options)

    def write(
        self,
        reviews: Sequence[str],
        summaries: Sequence[str | None] | None,
        ratings: Sequence[int],
        request_ids: Sequence[str | None] | None,
        model_version: str | None,
    ) -> None:
        n = len(reviews)
        if len(ratings) != n:
            raise ValueError(f"{len(ratings)} ratings for {n} reviews")
        rows = pd.DataFrame(
            {
                "reviewText": list(reviews),
                "summary": list(summaries) if summaries is not None else [None] * n,
                "overall": pd.Series(ratings, dtype="int64"),
                "request_id": list(request_ids) if request_ids is not None else [None] * n,
            }
        )
        self.append(rows, model_version)


def _read(folder: Path, prefix: str, check_contract: bool) -> pd.DataFrame:
    files = sorted(Path(folder).glob(f"{prefix}-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no {prefix}-*.parquet files in {folder}")
    tables = []
    for path in files:
        table = pq.read_table(path)
        if check_contract:
            found = (table.schema.metadata or {}).get(HASH_KEY, b"").decode()
            CONTRACT.require_hash(found, f"drift batch {path}")
        tables.append(table.replace_schema_metadata(None))
    return pa.concat_tables(tables, promote_options="default").to_pandas()


def read_batches(folder: Path) -> pd.DataFrame:
    """All persisted batches of a folder, oldest first; refuses files of another contract."""
    return _read(folder, BATCH_PREFIX, check_contract=True)


def read_feedback(folder: Path) -> pd.DataFrame:
    """All labelled feedback of a folder, oldest file first (empty frame if there is none)."""
    try:
        return _read(folder, FEEDBACK_PREFIX, check_contract=False)
    except FileNotFoundError:
        return pd.DataFrame(columns=[TIME_COLUMN, *FEEDBACK_COLUMNS, VERSION_COLUMN])


def since(frame: pd.DataFrame, start: datetime | None, strict: bool = False) -> pd.DataFrame:
    """The rows stamped at or after `start` (after it, if `strict`; all of them when None)."""
    if start is None or frame.empty:
        return frame
    stamps, moment = pd.to_datetime(frame[TIME_COLUMN], utc=True), pd.Timestamp(start)
    return frame[stamps > moment if strict else stamps >= moment].reset_index(drop=True)


def _write_atomically(frame: pd.DataFrame, path: Path) -> None:
    """A killed writer leaves a hidden `.batch-...` file that readers never match."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), HASH_KEY: CONTRACT.hash.encode()})
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)
