"""The Spark ETL on real reviews: no leakage, stratification, balancing, time split, bad options."""

from __future__ import annotations

import pandas as pd
import pytest
from pyspark.sql import SparkSession

from libs.features import CONTRACT
from libs.features.spark import local_session
from tests import fixtures
from workflows.etl import EtlParams, run_etl
from workflows.ingest import read_reviews


@pytest.fixture(scope="module")
def spark() -> SparkSession:
    return local_session("workflows-etl-test")


@pytest.fixture(scope="module")
def reviews(spark: SparkSession):
    frame = read_reviews(str(fixtures.path(fixtures.KINDLE_SAMPLE))).iloc[:800]
    # Two exact duplicates and an empty review must be dropped, not split.
    extra = frame.iloc[:2].assign(source_row=[9001, 9002])
    empty = frame.iloc[:1].assign(reviewText=None, summary=None, source_row=9003)
    return spark.createDataFrame(pd.concat([frame, extra, empty], ignore_index=True))


def test_stratified_split_without_leakage_and_balanced_train(reviews) -> None:
    outputs, tfidf, stats = run_etl(reviews, EtlParams(max_per_class=200, seed=3))
    frames = {name: frame.toPandas() for name, frame in outputs.items()}
    assert stats.rows_in == 803 and stats.empty_dropped == 1 and stats.duplicates_dropped == 2
    texts = [set(frame["clean_text"]) for frame in frames.values()]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert max(stats.split_counts["train"].values()) == 200  # the cap, train only
    assert sum(stats.split_counts["test"].values()) > 100  # natural mix kept
    assert stats.balanced_dropped > 0
    assert tfidf.size == stats.vocabulary > 1000
    train = frames["train"]
    assert list(train.columns[:9]) == ["overall", "text", "clean_text", *CONTRACT.numeric_names]
    assert all(len(i) == len(v) for i, v in zip(train["tfidf_indices"], train["tfidf_values"], strict=True))
    again = run_etl(reviews, EtlParams(max_per_class=200, seed=3))[0]["validation"].toPandas()
    assert sorted(again["clean_text"]) == sorted(frames["validation"]["clean_text"])  # seeded


def test_downsampling_and_time_split(reviews) -> None:
    outputs, _, stats = run_etl(reviews, EtlParams(max_per_class=0, balance_ratio=1.5, split="time"))
    smallest = min(stats.split_counts["train"].values())
    assert max(stats.split_counts["train"].values()) <= int(1.5 * smallest) + 1
    frames = {name: frame.toPandas() for name, frame in outputs.items()}
    assert frames["train"]["unixReviewTime"].max() <= frames["validation"]["unixReviewTime"].min()
    assert frames["validation"]["unixReviewTime"].max() <= frames["test"]["unixReviewTime"].min()


def test_bad_options_fail_before_spark_work(reviews) -> None:
    with pytest.raises(ValueError, match="leave a test share"):
        run_etl(reviews, EtlParams(train_ratio=0.9, val_ratio=0.1))
    with pytest.raises(ValueError, match="'stratified' or 'time'"):
        run_etl(reviews, EtlParams(split="random"))
