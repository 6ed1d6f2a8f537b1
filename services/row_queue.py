"""The bounded queue that carries scored rows off the request path to a background thread.

Requests put the numeric contract features scoring computed (one row per review), the
predicted labels and their probabilities (and, where the batch log keeps them, the review
texts), and return at once; the drift feed (`services.drift_feed`) and the
scored-batch log (`services.batch_log`) each have one queue and one thread that takes from
it. Bounded by rows and by bytes, not by requests, so memory does not depend on how large
requests are; what does not fit is dropped (and counted by the caller), never waited for.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from libs.features import CONTRACT, TEXT_COLUMN


class Block(NamedTuple):
    """Rows of one scoring call, as queued."""

    features: np.ndarray  # (n, k) float64 in `CONTRACT.numeric_names` order
    labels: np.ndarray  # (n,) predicted labels
    version: str | None  # of the model that scored them
    probabilities: np.ndarray | None  # (n, 5) the served (calibrated) star probabilities
    texts: list[str] | None  # the reviews, where they are kept


class Rows(NamedTuple):
    """Taken blocks joined: the features frame (with `TEXT_COLUMN` where texts were queued),
    the labels, and the probabilities (None unless every block had them)."""

    frame: pd.DataFrame
    labels: list[int]
    probabilities: np.ndarray | None


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
        self,
        features: np.ndarray,
        labels: Sequence[int] | np.ndarray,
        version: str | None = None,
        probabilities: np.ndarray | None = None,
        texts: Sequence[str] | None = None,
    ) -> int:
        """Queues what fits of the block (copied); returns the number of rows dropped.

        `features`: a scoring call's numeric features, one row per review, columns in
        `CONTRACT.numeric_names` order; `labels`: the predicted label of each row;
        `version`: the model's that scored them; `probabilities`: their star probabilities;
        `texts`: the reviews (a text weighs its length in bytes, so long reviews fill the
        byte bound sooner).
        """
        labels = np.asarray(labels, dtype=np.int64)
        if features.ndim != 2 or len(features) != len(labels):
            raise ValueError(f"features of shape {features.shape} for {len(labels)} labels")
        for name, part in (("probabilities", probabilities), ("texts", texts)):
            if part is not None and len(part) != len(labels):
                raise ValueError(f"{len(part)} {name} for {len(labels)} labels")
        row_bytes = features.itemsize * features.shape[1] + labels.itemsize
        if probabilities is not None:
            row_bytes += probabilities.itemsize * probabilities.shape[1]
        with self._ready:
            if self._closed:
                return len(labels)
            fits = min(len(labels), self.max_rows - self.rows, (self.max_bytes - self.bytes) // row_bytes)
            weight = fits * row_bytes
            if texts is not None:  # cut further while the texts overflow the byte bound
                sizes = np.cumsum([len(text) for text in texts[:fits]]) + row_bytes * np.arange(1, fits + 1)
                fits = int(np.searchsorted(sizes, self.max_bytes - self.bytes, side="right"))
                weight = int(sizes[fits - 1]) if fits else 0
            if fits > 0:
                self._blocks.append(
                    Block(
                        features[:fits].copy(),
                        labels[:fits].copy(),
                        version,
                        None if probabilities is None else probabilities[:fits].copy(),
                        None if texts is None else list(texts[:fits]),
                    )
                )
                self.rows += fits
                self.bytes += weight
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


def rows_frame(blocks: list[Block]) -> Rows:
    """Taken blocks as one frame of `CONTRACT.numeric_names` columns (contract dtypes), with the
    texts where every block has them, the labels and the probabilities."""
    features = np.concatenate([block.features for block in blocks])
    labels = np.concatenate([block.labels for block in blocks]).tolist()
    frame = pd.DataFrame(
        {feature.name: features[:, i].astype(feature.dtype) for i, feature in enumerate(CONTRACT.numeric)}
    )
    if all(block.texts is not None for block in blocks):
        frame[TEXT_COLUMN] = [text for block in blocks for text in block.texts or ()]
    probabilities = (
        np.concatenate([block.probabilities for block in blocks if block.probabilities is not None])
        if all(block.probabilities is not None for block in blocks)
        else None
    )
    return Rows(frame, labels, probabilities)
