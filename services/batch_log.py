"""The scored production batches the service keeps for the batch drift check.

What was scored (the numeric contract features, the predicted label and its star
probabilities, the version of the model that served it, the time, and the review text
where `KINDLE_BATCH_KEEP_TEXT` is set) goes to `KINDLE_BATCH_DIR` as `libs.production` batch
files, which the drift workflow compares with the champion's reference; unset, nothing
is written. Whether live drift monitoring runs or fails does not matter here: requests
put their rows on a queue of this log's own (`services.row_queue`, bounded by
`KINDLE_BATCH_QUEUE_ROWS`) and return at once, and one thread of its own writes them. A
write never fails its caller: every row not written is logged and counted in
`kindle_batch_dropped_rows_total` by reason (`queue_full`, `disk`, `error`), and what is
buffered is written on shutdown. Workers share the folder (file names carry the host, the
process id and a random part); it is kept within `KINDLE_BATCH_MAX_BYTES` and
`KINDLE_BATCH_MAX_AGE_DAYS`, the oldest files going first.
"""

from __future__ import annotations

import itertools
import logging
import threading
from pathlib import Path

import numpy as np

from libs.features import CONTRACT
from libs.production import DROPPED_DISK, DROPPED_ERROR, PROBABILITY_COLUMNS, BatchWriter, age_seconds
from services.metrics import get_metrics
from services.row_queue import Block, RowQueue, rows_frame
from services.settings import ServiceSettings

logger = logging.getLogger("kindle.batches")

DROPPED_QUEUE_FULL = "queue_full"
DROP_REASONS = (DROPPED_QUEUE_FULL, DROPPED_DISK, DROPPED_ERROR)
TAKE_ROWS = 1_024  # rows the thread gathers per write (or TAKE_SECONDS): one frame per write, not per request
TAKE_SECONDS = 0.5
STOP_SECONDS = 30.0  # longest wait for the writer on shutdown (a hung disk must not hang the worker)
ROW_BYTES = (len(CONTRACT.numeric) + len(PROBABILITY_COLUMNS)) * 8 + 8
"""A queued row: float64 features and probabilities, an int64 label."""
TEXT_BYTES = 2_000
"""Text bytes a queued row may average where texts are kept (a Kindle review: about 600)."""


class BatchLog:
    """Scored rows to `KINDLE_BATCH_DIR`, in files of `KINDLE_BATCH_ROWS_PER_FILE` rows or
    `KINDLE_BATCH_SECONDS_PER_FILE` seconds, written from a thread of its own, the folder kept
    within `KINDLE_BATCH_MAX_BYTES` and `KINDLE_BATCH_MAX_AGE_DAYS`; does nothing when the
    folder is unset."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        row_bytes = ROW_BYTES + (TEXT_BYTES if settings.batch_keep_text else 0)
        self._queue = RowQueue(settings.batch_queue_rows, settings.batch_queue_rows * row_bytes)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Starts the writer thread, in the worker (metrics exist only once BentoML set
        PROMETHEUS_MULTIPROC_DIR): each drop reason is exported from the start, at 0."""
        metrics = get_metrics()
        for reason in DROP_REASONS:
            metrics.batch_dropped.labels(reason)
        if not self.settings.batch_dir or self._thread is not None:
            return
        writer = BatchWriter(
            Path(self.settings.batch_dir),
            keep_text=self.settings.batch_keep_text,
            rows_per_file=self.settings.batch_rows_per_file,
            seconds_per_file=self.settings.batch_seconds_per_file,
            max_bytes=self.settings.batch_max_bytes,
            max_age_s=age_seconds(self.settings.batch_max_age_days),
            on_drop=self._count_dropped,
        )
        self._thread = threading.Thread(target=self._run, args=(writer,), name="kindle-batches", daemon=True)
        self._thread.start()

    def submit(
        self,
        features: np.ndarray,
        labels: list[int],
        version: str | None,
        probabilities: np.ndarray | None = None,
        texts: list[str] | None = None,
    ) -> None:
        """Never blocks: rows beyond the queue's bound are dropped and counted (`queue_full`);
        the arguments are `RowQueue.put`'s: `version` is the model's that scored the rows,
        recorded with them even when another has been swapped in before they are written;
        `texts` are queued only where the log keeps them."""
        if self._thread is None:
            return
        texts = texts if self.settings.batch_keep_text else None
        dropped = self._queue.put(features, labels, version, probabilities, texts)
        if dropped:
            self._count_dropped(dropped, DROPPED_QUEUE_FULL)

    def _run(self, writer: BatchWriter) -> None:
        # Idle waits are bounded by the file age, so that a pause in traffic still cuts a file.
        idle_s = self.settings.batch_seconds_per_file
        while True:
            blocks = self._queue.take(TAKE_ROWS, TAKE_SECONDS, idle_s)
            if blocks:
                self._write(writer, blocks)
            elif self._queue.closed:
                writer.close()
                return
            writer.flush_if_due()

    def _write(self, writer: BatchWriter, blocks: list[Block]) -> None:
        # One write per run of blocks scored by the same version (a reload changes it).
        for version, run in itertools.groupby(blocks, key=lambda block: block.version):
            same = list(run)
            rows = sum(len(block.labels) for block in same)
            try:
                frame, labels, probabilities = rows_frame(same)
                # A file that fails is counted by the writer (on_drop); an exception here means
                # the rows never reached its buffer.
                writer.write(frame, labels, version, probabilities)
            except Exception:
                logger.exception("%d scored rows not written", rows)
                self._count_dropped(rows, DROPPED_ERROR)

    @staticmethod
    def _count_dropped(rows: int, reason: str) -> None:
        get_metrics().batch_dropped.labels(reason).inc(rows)

    def close(self) -> None:
        """Writes what is queued and buffered (the thread does, then ends); waits for it."""
        self._queue.close()
        if self._thread is None:
            return
        self._thread.join(timeout=STOP_SECONDS)
        if self._thread.is_alive():
            logger.error(
                "batch writer still busy after %.0f s (%d rows queued)", STOP_SECONDS, self._queue.rows
            )
        self._thread = None
