"""A rotating log of Parquet files, the storage of every kind of production data.

Rows are buffered, a file is written atomically every `rows_per_file` rows or
`seconds_per_file`, and only the newest `max_files` are kept, so disk use is bounded.
Monitoring must never take the service down: a full disk, an unwritable folder or any
other failure to write a file is a logged warning and the buffered rows are dropped (and
counted, by reason), never an exception, unless the log is `strict` (data the caller must
not acknowledge unless it is on disk).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from libs.atomic import atomic_path
from libs.features import CONTRACT, FeatureContractError

logger = logging.getLogger("libs.production.parquet_log")

TIME_COLUMN = "timestamp"
VERSION_COLUMN = "model_version"
HASH_KEY = b"kindle_contract_hash"
DEFAULT_ROWS_PER_FILE = 5_000
DEFAULT_SECONDS_PER_FILE = 300.0
DEFAULT_MAX_FILES = 1_000
SKIPPED_NAMED = 10  # skipped files a warning names (a contract change may leave a thousand)
DROPPED_DISK = "disk"  # an OSError: full disk, unwritable or missing folder
DROPPED_ERROR = "error"  # any other failure to write a file

DropHook = Callable[[int, str], None]
"""Called with (rows, reason) for rows a log could not write: `DROPPED_DISK` or `DROPPED_ERROR`."""


class ParquetLog:
    """Buffers rows and writes `<prefix>-<time>-<pid>-<n>.parquet` files atomically.

    Defaults: a file per 5,000 rows or 300 s (checked on each append, and on `close()`),
    the newest 1,000 files kept (None: all). A write that fails is logged and its rows
    counted in `dropped_rows` and handed to `on_drop` with the reason (so a service can
    export them); with `strict` the error is raised as well (for data the caller must not
    acknowledge unless it is on disk).
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
        on_drop: DropHook | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.prefix = prefix
        self.strict = strict
        self.rows_per_file = max(rows_per_file, 1)
        self.seconds_per_file = seconds_per_file
        self.max_files = max_files
        self.clock = clock
        self.on_drop = on_drop
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

    def flush_if_due(self) -> None:
        """Writes the buffer once its oldest row is `seconds_per_file` old, with no new row to
        trigger it: a writer that calls this while traffic pauses keeps the files' age bound."""
        with self._lock:
            if self._buffer and self.clock() - self._first >= self.seconds_per_file:
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
        except Exception as error:
            self.dropped_rows += len(frame)
            logger.warning("%d %s rows not written to %s: %s", len(frame), self.prefix, self.folder, error)
            if self.on_drop is not None:
                self.on_drop(len(frame), DROPPED_DISK if isinstance(error, OSError) else DROPPED_ERROR)
            if self.strict:
                raise

    def _rotate(self) -> None:
        if self.max_files is None:
            return
        files = sorted(self.folder.glob(f"{self.prefix}-*.parquet"))
        for old in files[: max(len(files) - self.max_files, 0)]:
            old.unlink(missing_ok=True)


class LogRead(NamedTuple):
    """The rows of a log's files, and the files left out for another feature contract."""

    rows: pd.DataFrame
    skipped: list[Path]


def read_log(folder: Path, prefix: str, check_contract: bool) -> LogRead:
    """Every `<prefix>-*.parquet` file of a folder, oldest first.

    With `check_contract`, files written under another feature contract are skipped, counted
    and logged (their features mean something else), and the rest are read: after a
    contract change, old files must not blind the check until they rotate out. When every
    file is of another contract there is nothing to read, and that is an error naming one.
    """
    files = sorted(Path(folder).glob(f"{prefix}-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no {prefix}-*.parquet files in {folder}")
    tables, skipped, refusal = [], [], None
    for path in files:
        table = pq.read_table(path)
        if check_contract:
            found = (table.schema.metadata or {}).get(HASH_KEY, b"").decode()
            try:
                CONTRACT.require_hash(found, f"drift batch {path}")
            except FeatureContractError as error:
                skipped.append(path)
                refusal = refusal or error
                continue
        tables.append(table.replace_schema_metadata(None))
    if not tables:
        raise FeatureContractError(
            f"every {prefix} file in {folder} is of another feature contract: {refusal}"
        )
    if skipped:
        logger.warning(
            "%d %s files of another feature contract skipped in %s: %s",
            len(skipped),
            prefix,
            folder,
            ", ".join(path.name for path in skipped[:SKIPPED_NAMED])
            + (" ..." if len(skipped) > SKIPPED_NAMED else ""),
        )
    return LogRead(pa.concat_tables(tables, promote_options="default").to_pandas(), skipped)


def since(frame: pd.DataFrame, start: datetime | None, strict: bool = False) -> pd.DataFrame:
    """The rows stamped at or after `start` (after it, if `strict`; all of them when None)."""
    if start is None or frame.empty:
        return frame
    stamps, moment = pd.to_datetime(frame[TIME_COLUMN], utc=True), pd.Timestamp(start)
    return frame[stamps > moment if strict else stamps >= moment].reset_index(drop=True)


def _write_atomically(frame: pd.DataFrame, path: Path) -> None:
    """A killed writer leaves a hidden `.<prefix>-...` file that readers never match."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), HASH_KEY: CONTRACT.hash.encode()})
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)
