"""The Spark ETL on real reviews: no leakage, a split that adding data never changes, optional
balancing, the drift reference rows, both vectorisers, the time split, bad options."""

from __future__ import annotations

import pandas as pd
import pytest
from pyspark.sql import SparkSession

from libs.features import CLEAN_COLUMN, CONTRACT
from libs.features.spark import local_session
from tests import fixtures
from workflows.etl import EtlParams, EtlResult, run_etl
from workflows.ingest import read_reviews


@pytest.fixture(scope="module")
def spark() -> SparkSession:
    return local_session("workflows-etl-test")


@pytest.fixture(scope="module")
def sample(spark: SparkSession) -> pd.DataFrame:
    return read_reviews(spark, str(fixtures.path(fixtures.KINDLE_SAMPLE))).toPandas()


@pytest.fixture(scope="module")
def frame(sample: pd.DataFrame) -> pd.DataFrame:
    frame = sample.iloc[:800]
    # Two exact duplicates and an empty review must be dropped, not split.
    extra = frame.iloc[:2].assign(source_row=[9001, 9002])
    empty = frame.iloc[:1].assign(reviewText=None, summary=None, source_row=9003)
    return pd.concat([frame, extra, empty], ignore_index=True)


@pytest.fixture(scope="module")
def result(spark: SparkSession, frame: pd.DataFrame) -> EtlResult:
    return run_etl(spark.createDataFrame(frame), EtlParams(seed=3))


def texts_by_split(result: EtlResult) -> dict[str, set[str]]:
    return {name: set(split.toPandas()["clean_text"]) for name, split in result.splits.items()}


def test_every_kept_review_in_one_split_none_thrown_away(result: EtlResult) -> None:
    stats = result.stats
    assert stats.rows_in == 803 and stats.empty_dropped == 1 and stats.duplicates_dropped == 2
    assert stats.balanced_dropped == 0  # no cap by default: class weights balance the stars
    texts = texts_by_split(result)
    assert not (texts["train"] & texts["validation"] or texts["train"] & texts["test"])
    assert not texts["validation"] & texts["test"]
    assert sum(len(t) for t in texts.values()) == 800
    assert 0.6 < len(texts["train"]) / 800 < 0.8  # the 70 / 15 / 15 shares, by hash
    train = result.splits["train"].toPandas()
    assert list(train.columns[:9]) == ["overall", "text", "clean_text", *CONTRACT.numeric_names]


def test_the_drift_reference_rows_are_every_kept_review(result: EtlResult) -> None:
    reference = result.reference.toPandas()
    assert list(reference.columns) == [*CONTRACT.numeric_names, CLEAN_COLUMN] and len(reference) == 800


def test_the_search_vocabulary_is_the_training_split_s_and_the_final_one_adds_validation(
    result: EtlResult,
) -> None:
    assert set(result.search_tfidf.terms) < set(result.final_tfidf.terms)
    assert result.final_tfidf.n_docs == sum(len(t) for n, t in texts_by_split(result).items() if n != "test")
    assert result.stats.vocabulary == result.final_tfidf.size


def test_adding_reviews_moves_no_review_to_another_split(
    spark: SparkSession, sample: pd.DataFrame, frame: pd.DataFrame, result: EtlResult
) -> None:
    more = pd.concat([frame, sample.iloc[800:1400]])
    larger = texts_by_split(run_etl(spark.createDataFrame(more), EtlParams(seed=3)))
    for name, texts in texts_by_split(result).items():
        assert texts <= larger[name], name


def test_capping_and_time_split(spark: SparkSession, frame: pd.DataFrame) -> None:
    capped = run_etl(spark.createDataFrame(frame), EtlParams(max_per_class=100, split="time"))
    assert max(capped.stats.split_counts["train"].values()) == 100 and capped.stats.balanced_dropped > 0
    splits = {name: split.toPandas() for name, split in capped.splits.items()}
    assert len(capped.reference.toPandas()) == 800  # the reference keeps the natural mix
    train_times = pd.to_numeric(
        frame.set_index("reviewText").loc[splits["train"]["reviewText"], "unixReviewTime"]
    )
    test_times = pd.to_numeric(
        frame.set_index("reviewText").loc[splits["test"]["reviewText"], "unixReviewTime"]
    )
    assert train_times.max() <= test_times.min()


def test_bad_options_fail_before_spark_work(spark: SparkSession, frame: pd.DataFrame) -> None:
    reviews = spark.createDataFrame(frame.head(10))
    with pytest.raises(ValueError, match="leave a test share"):
        run_etl(reviews, EtlParams(train_ratio=0.9, val_ratio=0.1))
    with pytest.raises(ValueError, match="'hash' or 'time'"):
        run_etl(reviews, EtlParams(split="random"))
