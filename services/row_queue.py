"""The bounded queue that carries scored rows off the request path to a background thread.

Requests put the numeric contract features scoring computed (one row per review) and the
predicted labels, and return at once; the drift feed (`services.drift_feed`) and the
scored-batch log (`services.batch_log`) each have one queue and one thread that takes from
it. Bounded by rows and by bytes, not by requests, so memory does not depend on how large
requests are; what does not fit is dropped (and counted by the caller), never waited for.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence

import numpy as np
import pandas as pd

from libs.features import CONTRACT

Block = tuple[np.ndarray, np.ndarray, str | None]
"""(features (n, k) float64 in `CONTRACT.numeric_names` order, predicted labels (n,), the
version of the model that scored them)."""


class RowQueue:
    """First in, first out blocks of rows, bounded by rows and by bytes; `put` never waits.

    A block that does not fit whole is cut: its first rows are kept while there is room
    and the rest is dropped, so one request larger than the whole queue still feeds it.
    """

    def __init__(self, max_rows: int, max_bytes: int) -> None:
        if max_rows < 1 or max_bytes < 1:
            raise ValueError(f"a row queue needs room: max_rows={max_rows}, max_bytes={max_bytes}")
        self.max_rows, self.max_bytes = max_rows, max_bytes
        self.rows = self.bytes = 0
        self._blocks: deque[Block] = deque()
        self._closed = False
        self._ready = threading.Condition()

    def put(
        self, features: np.ndarray, labels: Sequence[int] | np.ndarray, version: str | None = None
    ) -> int:
        """Queues what fits of the block (copied); returns the number of rows dropped.

        `features`: a scoring call's numeric features, one row per review, columns in
        `CONTRACT.numeric_names` order; `labels`: the predicted label of each row;
        `version`: the model's that scored them.
        """
        labels = np.asarray(labels, dtype=np.int64)
        if features.ndim != 2 or len(features) != len(labels):
            raise ValueError(f"features of shape {features.shape} for {len(labels)} labels")
        row_bytes = features.itemsize * features.shape[1] + labels.itemsize
        with self._ready:
            if self._closed:
                return len(labels)
            fits = min(len(labels), self.max_rows - self.rows, (self.max_bytes - self.bytes) // row_bytes)
            if fits > 0:
                self._blocks.append((features[:fits].copy(), labels[:fits].copy(), version))
                self.rows += fits
                self.bytes += fits * row_bytes
                self._ready.notify()
            return len(labels) - fits

    @property
    def closed(self) -> bool:
        return self._closed

    def take(self, min_rows: int, wait_s: float, idle_s: float | None = None) -> list[Block]:
        """Every queued block, once there is one and then `min_rows` rows or `wait_s` seconds
        have passed; waits for the first block (at most `idle_s` seconds, when given); []
        once closed and empty, or when `idle_s` passed with nothing queued."""
        with self._ready:
            if not self._ready.wait_for(lambda: self._blocks or self._closed, timeout=idle_s):
                return []
            deadline = time.monotonic() + wait_s
            while self.rows < min_rows and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._ready.wait(left)
            blocks = list(self._blocks)
            self._blocks.clear()
            self.rows = self.bytes = 0
            return blocks

    def close(self) -> None:
        """`take` returns what is left without waiting, then []; `put` drops everything."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()


def rows_frame(blocks: list[Block]) -> tuple[pd.DataFrame, list[int]]:
    """Taken blocks as one frame of `CONTRACT.numeric_names` columns (contract dtypes) and labels."""
    features = np.concatenate([block[0] for block in blocks])
    labels = np.concatenate([block[1] for block in blocks]).tolist()
    frame = pd.DataFrame(
        {feature.name: features[:, i].astype(feature.dtype) for i, feature in enumerate(CONTRACT.numeric)}
    )
    return frame, labels
