"""The scored-batch log: its own queue and thread, real files in a temporary folder, and
every row it does not write counted in kindle_batch_dropped_rows_total by reason."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import prometheus_client
import pytest

from libs.features import CONTRACT, TEXT_COLUMN
from libs.production import LABEL_COLUMN, PROBABILITY_COLUMNS, VERSION_COLUMN, read_batches
from services.batch_log import DROP_REASONS, BatchLog
from services.settings import ServiceSettings

WIDTH = len(CONTRACT.numeric)


def rows(n: int, first: int = 0, version: str = "7") -> tuple[np.ndarray, list[int], str]:
    features = np.arange(first, first + n, dtype=np.float64)[:, None].repeat(WIDTH, axis=1)
    return features, [i % 5 + 1 for i in range(first, first + n)], version


def dropped(reason: str) -> float:
    value = prometheus_client.REGISTRY.get_sample_value("kindle_batch_dropped_rows_total", {"reason": reason})
    return value or 0.0


def started(folder: Path | None, **settings: object) -> BatchLog:
    # Drift off, as with KINDLE_DRIFT_ENABLED=false: the batch log does not depend on it.
    batch_dir = str(folder) if folder else None
    log = BatchLog(ServiceSettings(batch_dir=batch_dir, drift_enabled=False, **settings))
    log.start()
    return log


def test_rows_are_written_with_drift_off_and_flushed_on_close(tmp_path: Path) -> None:
    log = started(tmp_path)
    for start in range(0, 300, 100):
        log.submit(*rows(100, start))
    log.close()  # 300 rows: far from a file's 5,000 rows or 300 s, written by close
    batches = read_batches(tmp_path)
    assert batches[CONTRACT.numeric_names[0]].tolist() == [float(i) for i in range(300)]
    assert batches[LABEL_COLUMN].tolist() == [str(i % 5 + 1) for i in range(300)]
    assert set(batches[VERSION_COLUMN]) == {"7"}
    assert batches.dtypes[CONTRACT.numeric_names].tolist() == [f.dtype for f in CONTRACT.numeric]


def test_each_row_carries_the_version_that_scored_it_across_a_reload(tmp_path: Path) -> None:
    """Rows scored by v1 still queued when v2 is swapped in are written as v1's, in one file
    with v2's rows (one writer buffer), each row stamped with its own version."""
    log = started(tmp_path)
    log.submit(*rows(30, 0, version="v1"))
    log.submit(*rows(20, 30, version="v2"))
    log.submit(*rows(10, 50, version="v1"))  # a request scored by v1 that finished last
    log.close()
    batches = read_batches(tmp_path)
    assert batches[CONTRACT.numeric_names[0]].tolist() == [float(i) for i in range(60)]
    assert batches[VERSION_COLUMN].tolist() == ["v1"] * 30 + ["v2"] * 20 + ["v1"] * 10


def test_a_pause_in_traffic_still_cuts_a_file_once_it_is_old_enough(tmp_path: Path) -> None:
    log = started(tmp_path, batch_seconds_per_file=0.3)
    log.submit(*rows(20))
    deadline = time.monotonic() + 10
    while not list(tmp_path.glob("batch-*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(read_batches(tmp_path)) == 20  # no new row, no close: the writer cut it
    log.close()


def test_rows_beyond_the_queue_are_dropped_and_counted_as_queue_full(tmp_path: Path) -> None:
    before = dropped("queue_full")
    log = started(tmp_path, batch_queue_rows=100)
    log.submit(*rows(250))  # one request larger than the whole queue: its first 100 rows kept
    log.close()
    assert dropped("queue_full") - before == 150
    assert len(read_batches(tmp_path)) == 100


def test_rows_a_full_or_missing_disk_refuses_are_counted_as_disk(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    before = dropped("disk")
    log = started(blocker / "batches", batch_rows_per_file=50)
    for start in range(0, 120, 40):
        log.submit(*rows(40, start))
    log.close()
    assert dropped("disk") - before == 120


def test_rows_that_cannot_be_made_a_batch_are_counted_as_errors(tmp_path: Path) -> None:
    before = dropped("error")
    log = started(tmp_path)
    log.submit(np.zeros((3, WIDTH - 1)), [1, 2, 3], "7")  # a scoring call with a column missing
    log.close()
    log = started(tmp_path)
    log.submit(*rows(5))  # the next rows are written
    log.close()
    assert dropped("error") - before == 3
    assert len(read_batches(tmp_path)) == 5


def test_every_reason_is_exported_before_any_drop_even_without_a_folder() -> None:
    """The alert rule and the dashboard find the series at 0 (a rate needs a first sample)."""
    started(None).close()
    assert all(
        prometheus_client.REGISTRY.get_sample_value("kindle_batch_dropped_rows_total", {"reason": r})
        is not None
        for r in DROP_REASONS
    )


def test_settings_refuse_an_empty_queue() -> None:
    with pytest.raises(ValueError, match="batch_queue_rows"):
        ServiceSettings(batch_queue_rows=0)


@pytest.mark.parametrize("keep_text", [False, True])
def test_probabilities_are_logged_and_texts_only_where_they_are_kept(tmp_path: Path, keep_text: bool) -> None:
    """What the drift check estimates performance from, and the opt-in text of its domain
    classifier: reviews are customer data, so without the setting no text reaches the disk."""
    log = started(tmp_path, batch_keep_text=keep_text)
    features, labels, version = rows(3)
    proba = np.array([[0.1, 0.2, 0.3, 0.2, 0.2]] * 3)
    log.submit(features, labels, version, proba, ["good", "bad", "fine"])
    log.close()
    batches = read_batches(tmp_path)
    assert batches[list(PROBABILITY_COLUMNS)].to_numpy().tolist() == proba.tolist()
    assert (TEXT_COLUMN in batches.columns) is keep_text
    if keep_text:
        assert batches[TEXT_COLUMN].tolist() == ["good", "bad", "fine"]
