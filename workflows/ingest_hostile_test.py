"""Broken files through the real `ingest` task: a clear error, and nothing written downstream.

`ingest_test.py` checks the messages of `read_reviews`; here the Flyte Spark task itself
runs (local execution) with its raw-output folder in a temporary directory, so the test
sees exactly what the task would hand to the ETL: for every broken-file class, no Parquet
and no partial file. A valid file through the same setup does write its Parquet there,
which is what makes the empty-folder checks meaningful.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import SparkSession

from libs.features.spark import local_session
from tests import fixtures
from workflows import ingest as ingest_module
from workflows.ingest import InputValidationError, ingest
from workflows.settings import SETTINGS

pytest_plugins = ["tests.fixtures.flyte_local"]  # private_home, raw_output

FIFTY_MB = 50 * 2**20


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture(scope="module")
def spark() -> SparkSession:
    """The session the task finds too (the Spark plugin's `getOrCreate`)."""
    return local_session("workflows-ingest-hostile-test")


def read_reviews(spark: SparkSession, uri: str, max_chars: int = SETTINGS.max_review_chars) -> pd.DataFrame:
    return ingest_module.read_reviews(spark, uri, max_chars=max_chars).toPandas()


def _run_ingest(path: Path) -> pd.DataFrame:
    # A fresh fingerprint per call: the task is cached, and a cache hit would write nothing.
    reviews, _ = ingest(uri=str(path), content_fingerprint=uuid.uuid4().hex)
    return reviews.open(pd.DataFrame).all()


def _fifty_mb_review(path: Path) -> Path:
    with path.open("w", encoding="utf-8") as out:
        out.write('reviewText,overall,summary\n"')
        out.write("An endless review. " * (FIFTY_MB // 19))
        out.write('",5,long\n')
    assert path.stat().st_size > FIFTY_MB
    return path


def test_limit_is_far_above_real_reviews() -> None:
    longest = fixtures.kindle_sample()["reviewText"].dropna().str.len().max()
    assert SETTINGS.max_review_chars >= 20 * longest


def test_a_50_mb_review_names_file_row_and_limit(spark: SparkSession, tmp_path: Path) -> None:
    path = _fifty_mb_review(tmp_path / "huge.csv")
    with pytest.raises(InputValidationError) as caught:
        read_reviews(spark, str(path))
    message = str(caught.value)
    assert "huge.csv, row 1 (line 2)" in message
    assert f"limit of {SETTINGS.max_review_chars} characters" in message
    assert "KINDLE_MAX_REVIEW_CHARS" in message


def test_jsonl_and_parquet_have_the_same_limit(spark: SparkSession, tmp_path: Path) -> None:
    frame = pd.DataFrame({"reviewText": ["fine", "x" * 101], "overall": [5, 4], "summary": ["a", "b"]})
    frame.to_json(tmp_path / "long.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "long.parquet")
    with pytest.raises(
        InputValidationError, match=r"long\.jsonl, column 'reviewText', row 2 \(line 2\): 101"
    ):
        read_reviews(spark, str(tmp_path / "long.jsonl"), max_chars=100)
    with pytest.raises(InputValidationError, match=r"long\.parquet, column 'reviewText', row 2: 101 .*100"):
        read_reviews(spark, str(tmp_path / "long.parquet"), max_chars=100)
    assert len(read_reviews(spark, str(tmp_path / "long.parquet"), max_chars=101)) == 2


def test_fields_over_csvs_own_limit_but_under_ours_are_read(spark: SparkSession, tmp_path: Path) -> None:
    long_review = "word " * 60_000  # 300,000 characters: over csv's default 131,072
    path = tmp_path / "long.csv"
    pd.DataFrame({"reviewText": [long_review], "overall": [3]}).to_csv(path, index=False)
    assert read_reviews(spark, str(path))["reviewText"].tolist() == [long_review]


BROKEN = {
    "rating_7": b"reviewText,overall\ngood,5\nodd,7\n",
    "truncated": b'reviewText,overall\ngood,5\n"never closed,4\n',
    "wrong_delimiter": b"reviewText;overall\ngood;5\n",
    "garbage": bytes(range(256)) * 4,
    "empty": b"",
    "bad_encoding": "reviewText,overall\ncaf\u00e9,5\n".encode("latin-1"),
}


@pytest.mark.parametrize("case", [*BROKEN, "review_50_mb"])
def test_a_broken_file_writes_nothing_downstream(case: str, tmp_path: Path, raw_output: Path) -> None:
    if case == "review_50_mb":
        path = _fifty_mb_review(tmp_path / f"{case}.csv")
    else:
        path = tmp_path / f"{case}.csv"
        path.write_bytes(BROKEN[case])
    with pytest.raises(InputValidationError, match=rf"{case}\.csv"):
        _run_ingest(path)
    assert _files_under(raw_output) == []


def test_a_valid_file_is_written_where_broken_ones_are_not(tmp_path: Path, raw_output: Path) -> None:
    path = tmp_path / "good.csv"
    path.write_bytes(b"reviewText,overall\ngood,5\nbad,1\n")
    frame = _run_ingest(path)
    assert frame["overall"].tolist() == [5, 1]
    parts = [p for p in _files_under(raw_output) if p.name.startswith("part-")]
    assert parts and all(p.read_bytes()[:4] == b"PAR1" for p in parts), parts  # Spark's Parquet parts
