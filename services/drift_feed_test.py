"""The bounded row queue of the drift feed and the batch log: never blocking the request that puts."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from libs.features import CONTRACT, TEXT_COLUMN
from services.row_queue import RowQueue, rows_frame

WIDTH = len(CONTRACT.numeric)
ROW_BYTES = WIDTH * 8 + 8  # float64 features + an int64 label


def block(rows: int, first: int = 0) -> tuple[np.ndarray, np.ndarray]:
    features = np.arange(first, first + rows, dtype=np.float64)[:, None].repeat(WIDTH, axis=1)
    return features, np.arange(first, first + rows, dtype=np.int64) % 5 + 1


def test_rows_beyond_the_row_bound_are_dropped_and_the_first_rows_kept() -> None:
    queue = RowQueue(max_rows=10, max_bytes=2**20)
    assert [queue.put(*block(4, first=4 * i)) for i in range(3)] == [0, 0, 2]
    assert queue.put(*block(1000)) == 1000 and queue.rows == 10
    blocks = queue.take(min_rows=1, wait_s=0)
    assert np.concatenate([b[0][:, 0] for b in blocks]).tolist() == list(range(10))
    assert queue.rows == queue.bytes == 0
    assert queue.put(*block(3)) == 0  # taking frees the room


def test_the_byte_bound_holds_whatever_the_row_bound() -> None:
    queue = RowQueue(max_rows=1_000_000, max_bytes=5 * ROW_BYTES + ROW_BYTES // 2)
    assert queue.put(*block(1000)) == 995
    assert queue.rows == 5 and queue.bytes == 5 * ROW_BYTES
    wide = np.zeros((2, 100)), np.ones(2, dtype=np.int64)  # wider rows weigh more
    assert queue.put(*wide) == 2


def test_a_queued_block_does_not_share_memory_with_the_caller() -> None:
    queue = RowQueue(max_rows=10, max_bytes=2**20)
    features, labels = block(20)
    queue.put(features, labels)
    features[:] = -1.0
    kept = queue.take(min_rows=1, wait_s=0)[0][0]
    assert kept.shape == (10, WIDTH) and kept[:, 0].tolist() == list(range(10))  # not the -1s


def test_take_waits_for_enough_rows_within_its_time() -> None:
    queue = RowQueue(max_rows=100, max_bytes=2**20)

    def later() -> None:
        time.sleep(0.1)
        queue.put(*block(2))

    queue.put(*block(1))
    threading.Thread(target=later).start()
    started = time.monotonic()
    assert sum(len(b[1]) for b in queue.take(min_rows=3, wait_s=5)) == 3
    assert time.monotonic() - started < 2.5  # answered once the rows came, not at the deadline
    queue.put(*block(1))
    started = time.monotonic()
    assert sum(len(b[1]) for b in queue.take(min_rows=50, wait_s=0.2)) == 1
    assert 0.15 < time.monotonic() - started < 2.0


def test_take_gives_up_after_its_idle_time_without_closing() -> None:
    queue = RowQueue(max_rows=100, max_bytes=2**20)
    started = time.monotonic()
    assert queue.take(min_rows=1, wait_s=5, idle_s=0.2) == []
    assert 0.15 < time.monotonic() - started < 2.0 and not queue.closed
    queue.put(*block(2))
    assert sum(len(b[1]) for b in queue.take(min_rows=1, wait_s=5, idle_s=0.2)) == 2


def test_closing_hands_over_what_is_left_then_nothing() -> None:
    queue = RowQueue(max_rows=100, max_bytes=2**20)
    queue.put(*block(7))
    queue.close()
    assert sum(len(b[1]) for b in queue.take(min_rows=50, wait_s=30)) == 7
    assert queue.take(min_rows=1, wait_s=30) == [] and queue.closed
    assert queue.put(*block(3)) == 3


def test_bad_input_is_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="needs room"):
        RowQueue(max_rows=0, max_bytes=10)
    queue = RowQueue(max_rows=10, max_bytes=2**20)
    with pytest.raises(ValueError, match=r"features of shape \(3, 6\) for 2 labels"):
        queue.put(np.zeros((3, WIDTH)), np.ones(2, dtype=np.int64))


def test_probabilities_and_texts_travel_with_their_rows_and_texts_weigh_their_length() -> None:
    features, labels = block(4)
    proba = np.full((4, 5), 0.2)
    texts = ["a" * 100, "b", "c" * 50, "d"]
    row_bytes = ROW_BYTES + 5 * 8
    queue = RowQueue(max_rows=100, max_bytes=3 * row_bytes + 151)
    assert queue.put(features, labels, "v", proba, texts) == 1  # the fourth row's byte does not fit
    assert queue.bytes == 3 * row_bytes + 151
    rows = rows_frame(queue.take(min_rows=1, wait_s=0))
    assert rows.frame[TEXT_COLUMN].tolist() == texts[:3]
    assert rows.probabilities is not None and rows.probabilities.shape == (3, 5)
    with pytest.raises(ValueError, match="2 texts for 4 labels"):
        queue.put(features, labels, texts=["x", "y"])
