"""Retention by bytes and age, on real files: the bounds hold, a flood of tiny feedback files
cannot push out earlier feedback under the default budget, names never collide across
hosts, and a write does not rescan a folder of 10,000 files."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pandas as pd
import pytest

from libs.production import FeedbackWriter, read_feedback
from libs.production import parquet_log as log_module
from libs.production.parquet_log import DEFAULT_MAX_BYTES, host_name

START = 1_700_000_000.0
NAME = re.compile(r"feedback-(\d{8}T\d{12})-([A-Za-z0-9.-]+)-(\d+)-(\d{6})-([0-9a-f]{8})\.parquet")


def _files(folder: Path, prefix: str = "feedback") -> list[Path]:
    return sorted(folder.glob(f"{prefix}-*.parquet"))


def _bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in _files(folder))


def _one_file_size(tmp_path: Path) -> int:
    with FeedbackWriter(tmp_path / "probe", rows_per_file=1) as writer:
        writer.write(["A review of a typical length."], None, [4], ["r0"], "v1", "probe")
    return _bytes(tmp_path / "probe")


@pytest.mark.parametrize("scan_interval_s", [0.0, 1.0, 3600.0])
def test_the_byte_bound_holds_and_the_oldest_files_go_first(tmp_path: Path, scan_interval_s: float) -> None:
    """Exact for one writer, whether it rescans on every write or keeps a running tally."""
    size = _one_file_size(tmp_path)
    folder, budget = tmp_path / "log", int(3.5 * size)
    now = [START]
    writer = FeedbackWriter(
        folder, rows_per_file=1, max_bytes=budget, clock=lambda: now[0], scan_interval_s=scan_interval_s
    )
    for n in range(12):
        now[0] += 1
        writer.write([f"A review of a typical length {n:02d}."], None, [4], [f"r{n}"], "v1", "alice")
        assert _bytes(folder) <= budget
    kept = read_feedback(folder)["reviewText"].tolist()
    assert kept == [f"A review of a typical length {n:02d}." for n in (9, 10, 11)]


def test_the_age_bound_holds_on_writes_and_while_idle(tmp_path: Path) -> None:
    now = [START]
    writer = FeedbackWriter(
        tmp_path, rows_per_file=1, max_age_s=3600, clock=lambda: now[0], scan_interval_s=0
    )
    writer.write(["first"], None, [5], None, "v1", "alice")
    now[0] += 1800
    writer.write(["second"], None, [4], None, "v1", "alice")
    now[0] += 1801  # the first is 3,601 s old
    writer.write(["third"], None, [3], None, "v1", "alice")
    assert read_feedback(tmp_path)["reviewText"].tolist() == ["second", "third"]
    now[0] += 1800  # the second is 3,601 s old: no write, the idle check deletes it
    writer.flush_if_due()
    assert read_feedback(tmp_path)["reviewText"].tolist() == ["third"]
    assert len(_files(tmp_path)) == 1


def test_both_bounds_at_once_and_the_newest_file_is_always_kept(tmp_path: Path) -> None:
    size = _one_file_size(tmp_path)
    now = [START]
    writer = FeedbackWriter(
        tmp_path / "log",
        rows_per_file=1,
        max_bytes=int(2.5 * size),
        max_age_s=60,
        clock=lambda: now[0],
        scan_interval_s=0,
    )
    for n in range(5):
        now[0] += 10
        writer.write([f"review {n}"], None, [4], None, "v1", "alice")
    assert read_feedback(tmp_path / "log")["reviewText"].tolist() == ["review 3", "review 4"]  # bytes
    now[0] += 55  # review 3 is 65 s old, review 4 55 s
    writer.write(["review 5"], None, [4], None, "v1", "alice")
    assert read_feedback(tmp_path / "log")["reviewText"].tolist() == ["review 4", "review 5"]  # age
    tiny = FeedbackWriter(tmp_path / "tiny", rows_per_file=1, max_bytes=1, scan_interval_s=0)
    tiny.write(["over the budget alone"], None, [4], None, "v1", "alice")
    assert len(_files(tmp_path / "tiny")) == 1


def test_files_of_other_logs_and_hidden_files_are_never_counted_or_evicted(tmp_path: Path) -> None:
    (tmp_path / "batch-20000101T000000000000-a-1-000001-00000000.parquet").write_bytes(b"x" * 100_000)
    (tmp_path / ".feedback-20000101T000000000000.parquet.tmp").write_bytes(b"x" * 100_000)
    size = _one_file_size(tmp_path)
    writer = FeedbackWriter(tmp_path, rows_per_file=1, max_bytes=int(1.5 * size), scan_interval_s=0)
    for n in range(3):
        writer.write([f"review {n}"], None, [4], None, "v1", "alice")
    assert len(_files(tmp_path)) == 1
    assert len(_files(tmp_path, "batch")) == 1
    assert (tmp_path / ".feedback-20000101T000000000000.parquet.tmp").exists()


def test_writers_sharing_a_folder_keep_it_within_the_budget(tmp_path: Path) -> None:
    """Two hosts' writers: each evicts from its view, a file the other deleted is skipped, and
    once both have rescanned the folder is within the budget again."""
    size = _one_file_size(tmp_path)
    budget = int(4.5 * size)
    exact = [
        FeedbackWriter(tmp_path / "exact", rows_per_file=1, max_bytes=budget, scan_interval_s=0)
        for _ in range(2)
    ]
    for n in range(20):  # scanning on every write: exact
        exact[n % 2].write([f"review {n:02d}"], None, [4], None, "v1", f"host{n % 2}")
        assert _bytes(tmp_path / "exact") <= budget
    writers = [
        FeedbackWriter(tmp_path / "shared", rows_per_file=1, max_bytes=budget, scan_interval_s=0.2)
        for _ in range(2)
    ]
    for n in range(20):  # each misses the other's files until it rescans: the bound is overshot
        writers[n % 2].write([f"review {n:02d}"], None, [4], None, "v1", f"host{n % 2}")
    time.sleep(0.25)
    for writer in writers:
        writer.write(["last"], None, [4], None, "v1", "any")
    assert _bytes(tmp_path / "shared") <= budget
    assert read_feedback(tmp_path / "shared")["reviewText"].tolist()[-2:] == ["last", "last"]


def test_names_are_unique_across_hosts_and_processes_and_sort_by_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_module.socket, "gethostname", lambda: "web 1/été_α")
    assert host_name() == "web-1--t---"
    now = [START]
    writers = [FeedbackWriter(tmp_path, rows_per_file=1, clock=lambda: now[0]) for _ in range(2)]
    monkeypatch.setattr(log_module.socket, "gethostname", lambda: "web2.example.com")
    writers.append(FeedbackWriter(tmp_path, rows_per_file=1, clock=lambda: now[0]))
    for writer in writers:  # same time, same pid, same sequence number
        writer.write(["same moment"], None, [4], None, "v1", "alice")
    now[0] += 0.001
    writers[2].write(["a millisecond later"], None, [4], None, "v1", "alice")
    names = [path.name for path in _files(tmp_path)]
    assert len(names) == 4
    parts = [NAME.fullmatch(name) for name in names]
    assert all(parts), names
    assert {m.group(2) for m in parts if m} == {"web-1--t---", "web2.example.com"}
    assert {m.group(3) for m in parts if m} == {str(os.getpid())}
    assert read_feedback(tmp_path)["reviewText"].tolist()[-1] == "a millisecond later"


def test_a_flood_of_10000_one_row_files_evicts_no_earlier_feedback_under_the_default_budget(
    tmp_path: Path,
) -> None:
    """What a file count did: 10,000 tiny files from one client pushed out everything older.
    Under the default byte budget (1 GiB) they take ~50 MB and evict nothing."""
    legitimate = FeedbackWriter(tmp_path, rows_per_file=1)
    for n in range(5):
        legitimate.write([f"A genuine review {n}."], ["Genuine"], [5], [f"real-{n}"], "v1", "alice")
    earlier = _files(tmp_path)
    flood = FeedbackWriter(tmp_path, rows_per_file=1)
    assert flood.max_bytes == DEFAULT_MAX_BYTES == 2**30
    for n in range(10_000):
        flood.write(["spam"], None, [1], [f"flood-{n}"], "v1", "mallory")
    assert all(path.exists() for path in earlier)
    assert len(_files(tmp_path)) == 10_005
    assert _bytes(tmp_path) < DEFAULT_MAX_BYTES / 10
    first = pd.concat(pd.read_parquet(path) for path in _files(tmp_path)[:5])
    assert first["client"].tolist() == ["alice"] * 5


def test_a_write_does_not_rescan_a_folder_of_10000_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-write cost: with 10,000 files, a scan (list + stat) at most once per
    `scan_interval_s`, and the bound still exact for the writer (its running tally)."""
    size = _one_file_size(tmp_path)
    folder = tmp_path / "log"
    folder.mkdir()
    payload = (tmp_path / "probe").glob("feedback-*.parquet").__next__().read_bytes()
    for n in range(10_000):
        (
            folder / f"feedback-20230101T{n // 100:06d}{n % 100:06d}-old-1-{n:06d}-00000000.parquet"
        ).write_bytes(payload)
    scans = []
    real_scandir = os.scandir
    monkeypatch.setattr(log_module.os, "scandir", lambda path: scans.append(path) or real_scandir(path))
    budget = 10_000 * size
    writer = FeedbackWriter(folder, rows_per_file=1, max_bytes=budget, scan_interval_s=3600)
    started = time.perf_counter()
    for n in range(200):
        writer.write([f"review {n}"], None, [4], None, "v1", "alice")
    elapsed = time.perf_counter() - started
    assert len(scans) == 1
    names = [path.name for path in _files(folder)]
    assert _bytes(folder) <= budget and len(names) < 10_200  # the oldest evicted, to the byte
    assert sum(name.startswith("feedback-2023") for name in names) < 10_000
    assert not (folder / "feedback-20230101T000000000000-old-1-000000-00000000.parquet").exists()
    print(f"200 writes into 10,000 files, one scan: {1000 * elapsed / 200:.2f} ms a write")
