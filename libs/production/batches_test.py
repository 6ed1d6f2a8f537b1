"""Persisted production batches: rotating Parquet files that never fail the caller."""

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from libs.features import CONTRACT, FeatureContractError, compute_features
from libs.production import DROPPED_DISK, DROPPED_ERROR, BatchWriter, load_production, read_batches
from tests import fixtures


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    reviews = fixtures.kindle_sample().head(300)
    return compute_features(reviews["reviewText"].tolist(), reviews["summary"].tolist())


def test_batches_round_trip_features_labels_and_time(features: pd.DataFrame, tmp_path: Path) -> None:
    with BatchWriter(tmp_path, clock=lambda: 1_700_000_000.0) as writer:
        writer.write(features, predicted_labels=[5] * len(features))
    batches = read_batches(tmp_path)
    assert len(batches) == len(features)
    assert batches[CONTRACT.numeric_names].equals(features[CONTRACT.numeric_names])
    assert set(batches["predicted_label"]) == {"5"}
    assert batches["timestamp"].iloc[0] == pd.Timestamp(1_700_000_000, unit="s", tz="UTC")


def test_raw_text_is_kept_only_when_configured(features: pd.DataFrame, tmp_path: Path) -> None:
    with BatchWriter(tmp_path / "plain") as writer:
        writer.write(features)
    with BatchWriter(tmp_path / "text", keep_text=True) as writer:
        writer.write(features)
    assert "text" not in read_batches(tmp_path / "plain").columns
    assert read_batches(tmp_path / "text")["text"].tolist() == features["text"].tolist()


def test_a_new_file_starts_every_rows_per_file_rows(features: pd.DataFrame, tmp_path: Path) -> None:
    writer = BatchWriter(tmp_path, rows_per_file=100)
    for start in range(0, 300, 50):
        writer.write(features.iloc[start : start + 50])
    assert len(list(tmp_path.glob("batch-*.parquet"))) == 3


def test_a_file_is_cut_when_the_oldest_row_is_old_enough(features: pd.DataFrame, tmp_path: Path) -> None:
    now = [0.0]
    writer = BatchWriter(tmp_path, seconds_per_file=60, clock=lambda: now[0])
    writer.write(features.iloc[:10])
    assert not list(tmp_path.glob("batch-*.parquet"))
    now[0] = 61.0
    writer.write(features.iloc[10:20])
    assert len(read_batches(tmp_path)) == 20


def test_only_the_newest_files_within_max_bytes_are_kept(features: pd.DataFrame, tmp_path: Path) -> None:
    with BatchWriter(tmp_path / "one") as writer:
        writer.write(features.iloc[:50])
    size = next((tmp_path / "one").glob("batch-*.parquet")).stat().st_size
    folder = tmp_path / "kept"
    writer = BatchWriter(folder, rows_per_file=50, max_bytes=int(2.5 * size))
    for start in range(0, 300, 50):
        writer.write(features.iloc[start : start + 50])
    files = list(folder.glob("batch-*.parquet"))
    assert len(files) == 2 and sum(path.stat().st_size for path in files) <= 2.5 * size
    assert read_batches(folder)["text_len"].tolist() == features["text_len"].iloc[200:].tolist()


def test_writes_leave_no_temporary_files(features: pd.DataFrame, tmp_path: Path) -> None:
    with BatchWriter(tmp_path, rows_per_file=100) as writer:
        writer.write(features)
    assert all(path.name.startswith("batch-") for path in tmp_path.iterdir())


def test_unwritable_folder_is_a_warning_not_an_exception(
    features: pd.DataFrame, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    writer = BatchWriter(blocker / "batches", rows_per_file=100)
    writer.write(features)
    writer.close()
    assert writer.dropped_rows == len(features)
    assert "300 batch rows not written" in caplog.text


def test_batches_of_another_contract_are_refused(features: pd.DataFrame, tmp_path: Path) -> None:
    table = pa.Table.from_pandas(features[CONTRACT.numeric_names])
    pq.write_table(
        table.replace_schema_metadata({b"kindle_contract_hash": b"feedface"}), tmp_path / "batch-x.parquet"
    )
    with pytest.raises(
        FeatureContractError, match=r"batch-x\.parquet was built with feature contract feedface"
    ):
        read_batches(tmp_path)


def test_empty_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no batch-"):
        read_batches(tmp_path)


def test_batches_record_the_serving_model_version(features: pd.DataFrame, tmp_path: Path) -> None:
    with BatchWriter(tmp_path) as writer:
        writer.write(features.iloc[:10], [4] * 10, model_version="v1")
        writer.write(features.iloc[10:20], [4] * 10, model_version="v2")
    assert read_batches(tmp_path)["model_version"].tolist() == ["v1"] * 10 + ["v2"] * 10


def test_files_of_another_contract_are_skipped_counted_and_named(
    features: pd.DataFrame, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After a contract change the old files are left out, not the whole folder refused."""
    old = pa.Table.from_pandas(features[CONTRACT.numeric_names].iloc[:7], preserve_index=False)
    for name in (
        "batch-00000000T000000000000-1-000001.parquet",
        "batch-00000000T000000000000-1-000002.parquet",
    ):
        pq.write_table(old.replace_schema_metadata({b"kindle_contract_hash": b"feedface"}), tmp_path / name)
    with BatchWriter(tmp_path, clock=lambda: 1_700_000_000.0) as writer:
        writer.write(features.iloc[:10], [3] * 10, model_version="v2")
    batches = read_batches(tmp_path)
    assert len(batches) == 10 and set(batches["model_version"]) == {"v2"}
    assert "2 batch files of another feature contract skipped" in caplog.text
    assert "batch-00000000T000000000000-1-000002.parquet" in caplog.text
    data = load_production(tmp_path, start=datetime(2023, 1, 1, tzinfo=UTC))
    assert len(data.features) == 10
    assert [path.name for path in data.skipped_files] == [
        "batch-00000000T000000000000-1-000001.parquet",
        "batch-00000000T000000000000-1-000002.parquet",
    ]


def test_a_writer_hears_of_every_row_it_could_not_write_with_the_reason(
    features: pd.DataFrame, tmp_path: Path
) -> None:
    heard: list[tuple[int, str]] = []
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with BatchWriter(
        blocker / "batches", rows_per_file=100, on_drop=lambda n, why: heard.append((n, why))
    ) as w:
        w.write(features.iloc[:150])
        w.write(features.iloc[150:170])
    assert heard == [(150, DROPPED_DISK), (20, DROPPED_DISK)]
    with BatchWriter(tmp_path / "ok", on_drop=lambda n, why: heard.append((n, why))) as w:
        w.write(features.iloc[:5].assign(text_len=[1, "two", 3.0, 4, 5]))  # no Arrow column type fits
    assert heard[2:] == [(5, DROPPED_ERROR)]


def test_flush_if_due_cuts_a_file_only_once_the_oldest_row_is_old_enough(
    features: pd.DataFrame, tmp_path: Path
) -> None:
    now = [0.0]
    writer = BatchWriter(tmp_path, seconds_per_file=60, clock=lambda: now[0])
    writer.write(features.iloc[:10])
    now[0] = 59.0
    writer.flush_if_due()
    assert not list(tmp_path.glob("batch-*.parquet"))
    now[0] = 60.0
    writer.flush_if_due()
    assert len(read_batches(tmp_path)) == 10
