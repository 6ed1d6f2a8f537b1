"""Ingest through Spark on real and broken inputs: the same rows from every format, one Spark
task per file, and clear errors naming file, column and row."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from libs.features.spark import local_session
from tests import fixtures
from workflows import ingest, synthetic
from workflows.ingest import InputValidationError, fingerprint


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return fixtures.kindle_sample()


@pytest.fixture(scope="module")
def spark() -> SparkSession:
    return local_session("workflows-ingest-test")


def read(spark: SparkSession, uri: str, encoding: str = "utf-8") -> pd.DataFrame:
    return ingest.read_reviews(spark, uri, encoding).toPandas()


def test_real_kindle_csv_is_read_whole_with_dirty_short_ids(
    spark: SparkSession, sample: pd.DataFrame
) -> None:
    frame = read(spark, str(fixtures.path(fixtures.KINDLE_SAMPLE)))
    assert len(frame) == len(sample) == 3904
    assert frame["overall"].value_counts().to_dict() == {5: 2297, 4: 979, 3: 380, 2: 149, 1: 99}
    assert (frame["asin"].str.len() < 10).any()  # dirty short ids are kept, not rejected
    assert frame["unixReviewTime"].notna().all()
    assert list(frame["source_row"][:3]) == [1, 2, 3]


def test_parquet_jsonl_folder_and_url_give_the_same_rows(
    spark: SparkSession, tmp_path: Path, sample: pd.DataFrame
) -> None:
    part = sample.head(300).reset_index(drop=True)
    folder = tmp_path / "parts"
    folder.mkdir()
    part.iloc[:100].to_parquet(folder / "part-0.parquet")
    part.iloc[100:200].to_json(folder / "part-1.jsonl", orient="records", lines=True)
    part.iloc[200:].to_csv(folder / "part-2.csv")
    with gzip.open(folder / "part-3.csv.gz", "wt") as out:
        part.iloc[:5].to_csv(out)
    (folder / "_SUCCESS").write_text("")
    (folder / ".hidden.csv").write_text("garbage")
    frame = read(spark, str(folder))
    assert len(frame) == 305
    assert frame["reviewText"].tolist()[:300] == part["reviewText"].tolist()
    assert frame["source_file"].nunique() == 4
    assert len(read(spark, f"file://{folder}/part-1.jsonl")) == 100


def test_synthetic_csv_is_valid_and_labelled(spark: SparkSession, tmp_path: Path) -> None:
    path = synthetic.write(tmp_path / "synthetic.csv", rows=200)
    frame = read(spark, str(path))
    assert len(frame) == 200 and set(frame["overall"]) == {1, 2, 3, 4, 5}
    assert frame["summary"].str.startswith("[synthetic]").all()
    assert frame["asin"].str.startswith("SYNTH").all()


def _csv(tmp_path: Path, text: str | bytes, name: str = "reviews.csv") -> str:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def test_rating_of_7_names_file_column_and_row(spark: SparkSession, tmp_path: Path) -> None:
    path = _csv(tmp_path, "reviewText,overall\ngood,5\nfine,4\nodd,7\n")
    with pytest.raises(
        InputValidationError, match=r"reviews\.csv, column 'overall', row 3 \(line 4\): rating '7'"
    ):
        read(spark, path)


def test_non_numeric_and_missing_ratings(spark: SparkSession, tmp_path: Path) -> None:
    with pytest.raises(InputValidationError, match=r"row 1 .*rating 'five'"):
        read(spark, _csv(tmp_path, "reviewText,overall\ngood,five\n"))
    with pytest.raises(InputValidationError, match=r"row 2 .*rating empty"):
        read(spark, _csv(tmp_path, "reviewText,overall\ngood,5\nbad,\n"))
    with pytest.raises(InputValidationError, match=r"rating '4\.5'"):
        read(spark, _csv(tmp_path, "reviewText,overall\ngood,4.5\n"))


def test_truncated_csv_is_refused(spark: SparkSession, tmp_path: Path) -> None:
    whole = fixtures.path(fixtures.KINDLE_SAMPLE).read_bytes()[:20000]
    cut = whole[: whole.rfind(b'"', 0, 19000) + 40]  # ends inside a quoted review
    with pytest.raises(InputValidationError, match=r"truncated\.csv, row \d+ \(line \d+\): malformed CSV"):
        read(spark, _csv(tmp_path, cut, "truncated.csv"))
    short = _csv(tmp_path, "reviewText,overall,summary\ngood,5,yes\ncut,4\n", "short.csv")
    with pytest.raises(
        InputValidationError, match=r"short\.csv, row 2 \(line 3\): 2 fields, the header has 3"
    ):
        read(spark, short)


def test_wrong_delimiter_is_named(spark: SparkSession, tmp_path: Path) -> None:
    path = _csv(tmp_path, "reviewText;overall\ngood;5\n")
    with pytest.raises(
        InputValidationError, match=r"required column\(s\) .*missing.*wrong delimiter\? .*';'"
    ):
        read(spark, path)


def test_binary_garbage_empty_and_bad_encoding(spark: SparkSession, tmp_path: Path) -> None:
    with pytest.raises(InputValidationError, match=r"garbage\.csv: binary data \(NUL byte"):
        read(spark, _csv(tmp_path, bytes(range(256)) * 4, "garbage.csv"))
    with pytest.raises(InputValidationError, match=r"empty\.csv: empty file"):
        read(spark, _csv(tmp_path, b"", "empty.csv"))
    with pytest.raises(InputValidationError, match=r"latin\.csv: not valid utf-8 at byte \d+ \(line 2\)"):
        read(spark, _csv(tmp_path, "reviewText,overall\ncaf\u00e9,5\n".encode("latin-1"), "latin.csv"))
    assert (
        len(
            read(
                spark,
                _csv(tmp_path, "reviewText,overall\ncaf\u00e9,5\n".encode("latin-1"), "l.csv"),
                "latin-1",
            )
        )
        == 1
    )
    with pytest.raises(InputValidationError, match=r"header only, no rows"):
        read(spark, _csv(tmp_path, "reviewText,overall\n"))


def test_bad_parquet_jsonl_missing_path_and_empty_folder(spark: SparkSession, tmp_path: Path) -> None:
    with pytest.raises(InputValidationError, match=r"bad\.parquet: not a readable Parquet file"):
        read(spark, _csv(tmp_path, b"PAR1 this is not parquet", "bad.parquet"))
    with pytest.raises(InputValidationError, match=r"bad\.jsonl, row 2 \(line 2\): invalid JSON"):
        read(spark, _csv(tmp_path, json.dumps({"reviewText": "a", "overall": 5}) + "\n{oops\n", "bad.jsonl"))
    with pytest.raises(InputValidationError, match=r"no such file or folder"):
        read(spark, str(tmp_path / "missing.csv"))
    (tmp_path / "void").mkdir()
    with pytest.raises(InputValidationError, match=r"no \.csv, \.tsv, \.parquet or \.jsonl files"):
        read(spark, str(tmp_path / "void"))


def test_one_bad_part_fails_the_whole_folder_naming_the_first_by_file_name(
    spark: SparkSession, tmp_path: Path
) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "a.csv").write_text("reviewText,overall\ngood,5\n")
    (folder / "b.csv").write_text("reviewText,overall\nbad,0\n")
    (folder / "c.csv").write_bytes(b"\x00 broken as well")  # its task may well finish first
    with pytest.raises(InputValidationError, match=r"b\.csv, column 'overall', row 1"):
        read(spark, str(folder))


def test_every_file_is_read_by_a_spark_task_of_its_own(
    spark: SparkSession, sample: pd.DataFrame, tmp_path: Path
) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    for part in range(3):
        sample.iloc[part * 50 : (part + 1) * 50].to_csv(folder / f"part-{part}.csv")
    reviews = ingest.read_reviews(spark, str(folder))
    per_task = reviews.groupBy(F.spark_partition_id().alias("task")).agg(
        F.countDistinct("source_file").alias("files"), F.count("*").alias("rows")
    )
    assert sorted((row["files"], row["rows"]) for row in per_task.collect()) == [(1, 50)] * 3
    assert reviews.rdd.getNumPartitions() == 3


def test_fingerprint_follows_content(tmp_path: Path) -> None:
    path = _csv(tmp_path, "reviewText,overall\ngood,5\n")
    first = fingerprint(path)
    assert fingerprint(path) == first
    Path(path).write_text("reviewText,overall\ngood,4\n")
    assert fingerprint(path) != first
