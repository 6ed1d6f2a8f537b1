"""The Spark path of the features: the same Python functions, run by Spark executors.

`with_features` and `with_tfidf` hand each Arrow batch to `compute_features` and
`Tfidf.row`, the functions the service calls; `fit_tfidf` aggregates document
frequencies in Spark and collects only the kept vocabulary, never the corpus.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from libs.features.contract import CONTRACT
from libs.features.numeric import CLEAN_COLUMN, TEXT_COLUMN, compute_features
from libs.features.tfidf import Tfidf, select_vocabulary, tokenize

_SPARK_TYPES = {"int64": T.LongType(), "float64": T.DoubleType()}
TFIDF_INDICES = "tfidf_indices"
TFIDF_VALUES = "tfidf_values"
_PACKED = "_features"


def local_session(app_name: str, cores: int = 2, conf: dict[str, str] | None = None) -> SparkSession:
    """Spark in local mode on loopback only, sized for one machine.

    On a cluster the session comes from the Flyte Spark plugin instead; this is the
    embedded default for `pyflyte run`, tests and benchmarks.
    """
    # Python workers run this interpreter (and inherit this process's import path).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName(app_name)
        .master(f"local[{cores}]")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", str(max(2, cores * 2)))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        # At least 4 input splits per core: with 128 MB splits a 320 MB file makes 3 tasks
        # on 2 cores, and the third runs while the other core idles.
        .config("spark.sql.files.minPartitionNum", str(cores * 4))
        # On a few cores the JVM competes with the Python workers for CPU: the C1 compiler
        # alone and the throughput collector cut its CPU time on 200k ETL rows from 22 to 15 s.
        .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseParallelGC")
    )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def with_features(
    frame: DataFrame, review_col: str = "reviewText", summary_col: str | None = "summary"
) -> DataFrame:
    """Adds `text`, `clean_text` and the numeric features to every row.

    A scalar pandas UDF rather than `mapInPandas`: Spark ships only the review (and
    summary) column to Python and gets only the new columns back, keeping every other
    column in the JVM, so wide rows do not cross the Arrow boundary twice.
    """
    fields = [T.StructField(TEXT_COLUMN, T.StringType()), T.StructField(CLEAN_COLUMN, T.StringType())]
    fields += [T.StructField(f.name, _SPARK_TYPES[f.dtype]) for f in CONTRACT.numeric]
    names = [field.name for field in fields]
    inputs = [F.col(review_col)]
    if summary_col is not None and summary_col in frame.columns:
        inputs.append(F.col(summary_col))

    @F.pandas_udf(T.StructType(fields))
    def features(*columns: pd.Series) -> pd.DataFrame:
        return compute_features(*(column.tolist() for column in columns))

    packed = frame.select("*", features(*inputs).alias(_PACKED))
    return packed.select(
        *[F.col(c) for c in frame.columns], *[F.col(f"{_PACKED}.{n}").alias(n) for n in names]
    )


def fit_tfidf(frame: DataFrame, clean_col: str = CLEAN_COLUMN) -> Tfidf:
    """Fits the vocabulary from document frequencies aggregated by Spark."""
    spec = CONTRACT.tfidf

    @F.pandas_udf(T.ArrayType(T.StringType()))
    def distinct_terms(texts: pd.Series) -> pd.Series:
        return texts.map(lambda text: sorted(set(tokenize(text, spec))))

    n_docs = frame.count()
    frequencies = (
        frame.select(F.explode(distinct_terms(F.col(clean_col))).alias("term"))
        .groupBy("term")
        .count()
        .where(F.col("count") >= spec.min_df)
        .orderBy(F.desc("count"), F.asc("term"))
        .limit(spec.max_features)
        .collect()
    )
    kept = dict(select_vocabulary({row["term"]: row["count"] for row in frequencies}, spec))
    return Tfidf.from_document_frequencies(kept, n_docs, spec)


def with_tfidf(frame: DataFrame, tfidf: Tfidf, clean_col: str = CLEAN_COLUMN) -> DataFrame:
    """Adds the sparse TF-IDF vector as two arrays: sorted indices and their values."""
    schema = T.StructType(
        [
            *list(frame.schema.fields),
            T.StructField(TFIDF_INDICES, T.ArrayType(T.IntegerType(), False), False),
            T.StructField(TFIDF_VALUES, T.ArrayType(T.DoubleType(), False), False),
        ]
    )

    def batches(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for part in parts:
            rows = [tfidf.row(text) for text in part[clean_col]]
            part = part.copy()
            part[TFIDF_INDICES] = [indices.tolist() for indices, _ in rows]
            part[TFIDF_VALUES] = [values.tolist() for _, values in rows]
            yield part

    return frame.mapInPandas(batches, schema)
