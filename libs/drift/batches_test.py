"""Persisted production batches: rotating Parquet files that never fail the caller."""

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from libs.drift import BatchWriter, FeedbackWriter, read_batches, read_feedback, since
from libs.features import CONTRACT, FeatureContractError, compute_features
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


def test_only_the_newest_max_files_are_kept(features: pd.DataFrame, tmp_path: Path) -> None:
    writer = BatchWriter(tmp_path, rows_per_file=50, max_files=2)
    for start in range(0, 300, 50):
        writer.write(features.iloc[start : start + 50])
    assert len(list(tmp_path.glob("batch-*.parquet"))) == 2
    assert read_batches(tmp_path)["text_len"].tolist() == features["text_len"].iloc[200:].tolist()


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


def test_feedback_round_trips_texts_ratings_requests_and_versions(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    with FeedbackWriter(tmp_path, rows_per_file=2, clock=lambda: now[0]) as writer:
        writer.write(["Loved it", "Awful"], ["Yes", None], [5, 1], ["r1", None], "v1")
        now[0] += 3600
        writer.write(["Fine"], None, [3], None, "v2")
    feedback = read_feedback(tmp_path)
    assert feedback["reviewText"].tolist() == ["Loved it", "Awful", "Fine"]
    assert feedback["overall"].tolist() == [5, 1, 3]
    assert feedback["request_id"].tolist() == ["r1", None, None]
    assert feedback["model_version"].tolist() == ["v1", "v1", "v2"]
    later = since(feedback, pd.Timestamp(1_700_000_000 + 1800, unit="s", tz="UTC").to_pydatetime())
    assert later["reviewText"].tolist() == ["Fine"]
    assert read_feedback(tmp_path / "none").empty


def test_feedback_with_misaligned_ratings_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1 ratings for 2 reviews"):
        FeedbackWriter(tmp_path).write(["a", "b"], None, [5], None, "v1")


def test_a_strict_log_raises_what_it_could_not_write(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    writer = FeedbackWriter(blocker / "feedback", rows_per_file=1, strict=True)
    with pytest.raises(OSError):
        writer.write(["text"], None, [4], None, "v1")
    assert writer.dropped_rows == 1
