"""Production batches persisted as rotating Parquet files for the batch drift workflow.

Each file holds the contract's numeric features, the predicted label and a UTC
timestamp per row (raw text only when `keep_text` is set: reviews are customer data).
Monitoring must never take the service down, so a full disk or an unwritable folder
is a logged warning and the buffered rows are dropped (and counted), never an exception.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from libs.features import CONTRACT, TEXT_COLUMN, FeatureContractError
from libs.features.atomic import atomic_path

logger = logging.getLogger("libs.drift.batches")

LABEL_COLUMN = "predicted_label"
TIME_COLUMN = "timestamp"
HASH_KEY = b"kindle_contract_hash"
DEFAULT_ROWS_PER_FILE = 5_000
DEFAULT_SECONDS_PER_FILE = 300.0
DEFAULT_MAX_FILES = 1_000


class BatchWriter:
    """Buffers rows in memory and writes a new Parquet file per `rows_per_file` rows.

    A file is also cut when the oldest buffered row is `seconds_per_file` old (checked on
    each write) and on `close()`. Only the newest `max_files` files are kept (None: all),
    so disk use is bounded too. Defaults: 5,000 rows, 300 s, 1,000 files.
    """

    def __init__(
        self,
        folder: Path,
        rows_per_file: int = DEFAULT_ROWS_PER_FILE,
        seconds_per_file: float = DEFAULT_SECONDS_PER_FILE,
        max_files: int | None = DEFAULT_MAX_FILES,
        keep_text: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.folder = Path(folder)
        self.rows_per_file = max(rows_per_file, 1)
        self.seconds_per_file = seconds_per_file
        self.max_files = max_files
        self.keep_text = keep_text
        self.clock = clock
        self.dropped_rows = 0
        self._buffer: list[pd.DataFrame] = []
        self._buffered = 0
        self._first = 0.0
        self._sequence = 0
        self._lock = threading.Lock()

    def write(self, features: pd.DataFrame, predicted_labels: Sequence[object] | None = None) -> None:
        missing = [name for name in CONTRACT.numeric_names if name not in features.columns]
        if missing:
            raise FeatureContractError(f"batch lacks feature columns {missing}")
        now = self.clock()
        columns = CONTRACT.numeric_names + ([TEXT_COLUMN] if self.keep_text else [])
        rows = features[columns].reset_index(drop=True)
        rows.insert(0, TIME_COLUMN, pd.Timestamp(datetime.fromtimestamp(now, UTC)))
        if predicted_labels is not None:
            rows[LABEL_COLUMN] = [str(label) for label in predicted_labels]
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

    def __enter__(self) -> BatchWriter:
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
        path = self.folder / f"batch-{stamp}-{os.getpid()}-{self._sequence:06d}.parquet"
        try:
            _write_atomically(frame, path)
            self._rotate()
        except (OSError, pa.ArrowException) as error:
            self.dropped_rows += len(frame)
            logger.warning("drift batch of %d rows not written to %s: %s", len(frame), self.folder, error)

    def _rotate(self) -> None:
        if self.max_files is None:
            return
        files = sorted(self.folder.glob("batch-*.parquet"))
        for old in files[: max(len(files) - self.max_files, 0)]:
            old.unlink(missing_ok=True)


def read_batches(folder: Path) -> pd.DataFrame:
    """All persisted batches of a folder, oldest first; refuses files of another contract."""
    files = sorted(Path(folder).glob("batch-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no batch-*.parquet files in {folder}")
    tables = []
    for path in files:
        table = pq.read_table(path)
        found = (table.schema.metadata or {}).get(HASH_KEY, b"").decode()
        CONTRACT.require_hash(found, f"drift batch {path}")
        tables.append(table.replace_schema_metadata(None))
    return pa.concat_tables(tables, promote_options="default").to_pandas()


def _write_atomically(frame: pd.DataFrame, path: Path) -> None:
    """A killed writer leaves a hidden `.batch-...` file that `read_batches` never matches."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), HASH_KEY: CONTRACT.hash.encode()})
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)
