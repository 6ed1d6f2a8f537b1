"""Labelled feedback through the real `ingest` task (local Flyte, real Spark): each client's
rows are capped at its share of the training input, its newest kept, rows without a client
counted as one client, and the share is part of the task's cache key."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from libs.features.spark import local_session
from libs.production import FeedbackWriter
from tests import fixtures
from workflows.ingest import UNKNOWN_CLIENT, feedback_note, feedback_reviews, ingest

pytest_plugins = ["tests.fixtures.flyte_local"]  # private_home, raw_output

START = 1_700_000_000.0
INPUT_ROWS = 100


@pytest.fixture(scope="module")
def spark() -> SparkSession:
    """The session the task finds too (the Spark plugin's `getOrCreate`)."""
    return local_session("workflows-ingest-feedback-test")


@pytest.fixture(scope="module")
def reviews() -> pd.DataFrame:
    return fixtures.kindle_sample()


def write_feedback(folder: Path, reviews: pd.DataFrame) -> None:
    """Real reviews as feedback: 5 rows of an old file without a `client` column, then alice
    10 in one request, mallory 50 one by one and 18 rows that name no client."""
    rows = reviews.iloc[INPUT_ROWS:].reset_index(drop=True)
    folder.mkdir()
    old = pd.DataFrame(
        {
            "timestamp": pd.to_datetime([START - 100 + n for n in range(5)], unit="s", utc=True).astype(
                "datetime64[us, UTC]"
            ),
            "reviewText": rows["reviewText"][:5],
            "summary": rows["summary"][:5],
            "overall": rows["overall"][:5].astype("int64"),
            "request_id": [None] * 5,
            "model_version": ["v0"] * 5,
        }
    )
    pq.write_table(
        pa.Table.from_pandas(old, preserve_index=False),
        folder / "feedback-20231114T221140000000-1-000001.parquet",
    )
    now = [START]
    writer = FeedbackWriter(folder, rows_per_file=1, clock=lambda: now[0])
    writer.write(
        rows["reviewText"][5:15].tolist(),
        rows["summary"][5:15].tolist(),
        rows["overall"][5:15].tolist(),
        None,
        "v1",
        "alice",
    )
    for n in range(15, 65):
        now[0] += 1
        writer.write(
            [rows["reviewText"][n]], [rows["summary"][n]], [int(rows["overall"][n])], None, "v1", "mallory"
        )
    now[0] += 1
    writer.write(rows["reviewText"][65:83].tolist(), None, rows["overall"][65:83].tolist(), None, "v1", None)


def test_each_clients_newest_rows_are_kept_up_to_its_share(reviews: pd.DataFrame, tmp_path: Path) -> None:
    write_feedback(tmp_path / "feedback", reviews)
    rows = reviews.iloc[INPUT_ROWS:].reset_index(drop=True)
    labelled = feedback_reviews(str(tmp_path / "feedback"), most_per_client=20)
    assert labelled.capped == {"mallory": 30, UNKNOWN_CLIENT: 3}
    texts = labelled.reviews["reviewText"].tolist()
    assert len(texts) == 10 + 20 + 20
    assert texts[:2] == rows["reviewText"][3:5].tolist()  # the old file's newest 2 of 5
    assert texts[2:12] == rows["reviewText"][5:15].tolist()  # alice, under her share
    assert texts[12:32] == rows["reviewText"][45:65].tolist()  # mallory's newest 20
    assert texts[32:] == rows["reviewText"][65:83].tolist()  # no client: with the old file's rows
    assert labelled.until == pd.Timestamp(START + 51, unit="s", tz="UTC").isoformat()
    everything = feedback_reviews(str(tmp_path / "feedback"))
    assert len(everything.reviews) == 83 and everything.capped == {}


def test_the_ingest_task_caps_each_client_and_its_share_is_in_the_cache_key(
    spark: SparkSession, reviews: pd.DataFrame, tmp_path: Path, raw_output: Path
) -> None:
    source = tmp_path / "input.csv"
    reviews.iloc[:INPUT_ROWS].to_csv(source)
    write_feedback(tmp_path / "feedback", reviews)
    key = {
        "uri": str(source),
        "content_fingerprint": uuid.uuid4().hex,
        "feedback": str(tmp_path / "feedback"),
        "feedback_fingerprint": uuid.uuid4().hex,
    }
    table, stats = ingest(**key, feedback_client_share=0.2)  # 20 rows a client
    frame = table.open(pd.DataFrame).all()
    assert len(frame) == stats.rows == INPUT_ROWS + 50
    assert stats.feedback_rows == 50 and stats.feedback_capped_rows == 33
    assert stats.feedback_capped == {"mallory": 30, UNKNOWN_CLIENT: 3}
    assert (frame["source_file"].str.endswith("#feedback")).sum() == 50
    assert feedback_note(stats) == (
        "50 labelled feedback, 33 over a client's 20 % share left out (mallory 30, unknown 3)"
    )
    _, wider = ingest(**key, feedback_client_share=0.5)  # same fingerprints: no cache hit
    assert wider.feedback_rows == 10 + 50 + 23 and wider.feedback_capped == {}
    assert feedback_note(wider) == "83 labelled feedback"
    with pytest.raises(ValueError, match="not in"):
        ingest(**key, feedback_client_share=0.0)
