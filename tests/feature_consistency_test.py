"""The Spark path and the service's pandas path of libs/features agree on real reviews.

Spark runs for real (local mode, loopback). Any change to one path alone (cleaning,
a feature, tokenisation, the vocabulary rule) makes these tests fail.
"""

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession

from libs.features import CLEAN_COLUMN, CONTRACT, Tfidf, compute_features
from libs.features import spark as spark_features
from tests import fixtures

COUNT_FEATURES = [f.name for f in CONTRACT.numeric if f.dtype == "int64"]
RATIO_FEATURES = [f.name for f in CONTRACT.numeric if f.dtype == "float64"]


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    session = spark_features.local_session("feature-consistency")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def reviews() -> pd.DataFrame:
    """Both Kindle book sets: the 2014 sample (with summaries, dirty ids) and 2018 (HTML, newlines)."""
    sample = fixtures.kindle_sample()[["reviewText", "summary"]]
    recent = fixtures.kindle_2018()[["reviewText"]].assign(summary=None)
    frame = pd.concat([sample, recent], ignore_index=True)
    return frame.assign(row_id=np.arange(len(frame)))


@pytest.fixture(scope="module")
def spark_rows(spark: SparkSession, reviews: pd.DataFrame) -> pd.DataFrame:
    frame = spark.createDataFrame(reviews).repartition(4)
    return spark_features.with_features(frame).toPandas().sort_values("row_id").reset_index(drop=True)


@pytest.fixture(scope="module")
def pandas_rows(reviews: pd.DataFrame) -> pd.DataFrame:
    return compute_features(reviews["reviewText"].tolist(), reviews["summary"].tolist())


def test_same_text_and_clean_text(spark_rows: pd.DataFrame, pandas_rows: pd.DataFrame) -> None:
    assert len(spark_rows) == len(pandas_rows) == 7897
    assert spark_rows["text"].tolist() == pandas_rows["text"].tolist()
    assert spark_rows[CLEAN_COLUMN].tolist() == pandas_rows[CLEAN_COLUMN].tolist()


def test_counts_exactly_equal(spark_rows: pd.DataFrame, pandas_rows: pd.DataFrame) -> None:
    for name in COUNT_FEATURES:
        assert spark_rows[name].dtype == pandas_rows[name].dtype == np.int64, name
        assert (spark_rows[name].to_numpy() == pandas_rows[name].to_numpy()).all(), name


def test_ratios_equal_to_1e_12(spark_rows: pd.DataFrame, pandas_rows: pd.DataFrame) -> None:
    for name in RATIO_FEATURES:
        np.testing.assert_allclose(spark_rows[name], pandas_rows[name], rtol=0, atol=1e-12, err_msg=name)


def test_spark_fit_gives_the_same_vocabulary_and_idf(spark: SparkSession, pandas_rows: pd.DataFrame) -> None:
    in_spark = spark_features.fit_tfidf(spark.createDataFrame(pandas_rows[[CLEAN_COLUMN]]).repartition(4))
    in_memory = Tfidf.fit(pandas_rows[CLEAN_COLUMN].tolist())
    assert in_spark.n_docs == in_memory.n_docs
    assert in_spark.terms == in_memory.terms
    np.testing.assert_allclose(in_spark.idf, in_memory.idf, rtol=0, atol=1e-12)


def test_tfidf_vectors_equal(spark: SparkSession, pandas_rows: pd.DataFrame) -> None:
    tfidf = Tfidf.fit(pandas_rows[CLEAN_COLUMN].tolist())
    frame = spark.createDataFrame(pandas_rows[[CLEAN_COLUMN]].assign(row_id=np.arange(len(pandas_rows))))
    rows = spark_features.with_tfidf(frame.repartition(4), tfidf).toPandas().sort_values("row_id")
    matrix = tfidf.transform(pandas_rows[CLEAN_COLUMN].tolist())
    assert len(rows) == matrix.shape[0]
    for position, (indices, values) in enumerate(
        zip(rows[spark_features.TFIDF_INDICES], rows[spark_features.TFIDF_VALUES], strict=True)
    ):
        expected = matrix[position]
        assert list(indices) == expected.indices.tolist(), position
        np.testing.assert_allclose(values, expected.data, rtol=0, atol=1e-12)
