"""The Spark path of the features: the same batch kernels, run by Spark's Python workers.

Spark hands the kernels Arrow arrays and takes Arrow arrays back (Arrow UDFs, no pandas
in between). `with_features` and `with_tfidf` are scalar Arrow UDFs rather than
`mapInArrow` over whole rows: only the columns they read cross to Python and only their
results come back, every other column of the row stays in the JVM. `fit_tfidf`
counts document frequencies per Arrow batch in Python (`mapInArrow`) and sums them in
Spark, collecting only the kept vocabulary, never the corpus.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from libs.features.contract import CONTRACT
from libs.features.table import CLEAN_COLUMN, SCHEMA, TEXT_COLUMN, combined_texts, features_table
from libs.features.tfidf import Tfidf, document_frequencies, select_vocabulary

_SPARK_TYPES = {"int64": T.LongType(), "float64": T.DoubleType()}
TFIDF_INDICES = "tfidf_indices"
TFIDF_VALUES = "tfidf_values"
_PACKED = "_features"
# What the features UDF returns: the kernel's columns but `text` (a UDF of its own), with
# Spark's 32-bit-offset `string`s where the kernels return `large_string`s.
_SPARK_FEATURES = pa.schema(
    [f.with_type(pa.string()) if f.type == pa.large_string() else f for f in SCHEMA if f.name != TEXT_COLUMN]
)
_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseParallelGC"
"""On a few cores the JVM competes with the Python workers for CPU: the C1 compiler alone and
the throughput collector cut its CPU time on 200k ETL rows from 22 to 15 s."""
_FREQUENCIES = pa.schema([pa.field("term", pa.string()), pa.field("df", pa.int64())])


def local_session(
    app_name: str, cores: int = 2, conf: dict[str, str] | None = None, master: str = ""
) -> SparkSession:
    """Spark on loopback only, sized for `cores` cores of one machine: in local mode, or on
    the standalone cluster `master` on this machine (benchmarks).

    On a cluster the session comes from the Flyte Spark plugin instead; this is the
    embedded default for tests and benchmarks.
    """
    # Python workers run this interpreter (and inherit this process's import path).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName(app_name)
        .master(master or f"local[{cores}]")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", str(max(2, cores * 2)))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        # At least 4 input splits per core: with 128 MB splits a 320 MB file makes 3 tasks
        # on 2 cores, and the third runs while the other core idles.
        .config("spark.sql.files.minPartitionNum", str(cores * 4))
        # One Python worker per core already keeps every core busy: Polars' own thread
        # pool in each worker would only compete with the other workers.
        .config("spark.executorEnv.POLARS_MAX_THREADS", "1")
        .config("spark.driver.extraJavaOptions", _JVM_OPTIONS)
        .config("spark.executor.extraJavaOptions", _JVM_OPTIONS)  # the executors of a cluster
    )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def with_features(
    frame: DataFrame, review_col: str = "reviewText", summary_col: str | None = "summary"
) -> DataFrame:
    """Adds `text`, `clean_text` and the numeric features to every row (`features_table`).

    `text` comes from a UDF of its own, so a query that does not keep it (the clean text is
    what most steps need) never ships it back from Python.
    """
    fields = [T.StructField(CLEAN_COLUMN, T.StringType(), False)]
    fields += [T.StructField(f.name, _SPARK_TYPES[f.dtype], False) for f in CONTRACT.numeric]
    inputs = [F.col(review_col)]
    if summary_col is not None and summary_col in frame.columns:
        inputs.append(F.col(summary_col))

    @F.arrow_udf(T.StringType())
    def text(*columns: pa.Array) -> pa.Array:
        return combined_texts(*columns).to_arrow().cast(pa.string())

    @F.arrow_udf(T.StructType(fields))
    def features(*columns: pa.Array) -> pa.Array:
        table = features_table(*columns).drop_columns([TEXT_COLUMN])
        return pa.StructArray.from_arrays(
            [c.combine_chunks() for c in table.cast(_SPARK_FEATURES).columns], fields=list(_SPARK_FEATURES)
        )

    packed = frame.select("*", text(*inputs).alias(TEXT_COLUMN), features(*inputs).alias(_PACKED))
    return packed.select(
        *[F.col(c) for c in frame.columns],
        F.col(TEXT_COLUMN),
        *[F.col(f"{_PACKED}.{field.name}").alias(field.name) for field in fields],
    )


def fit_tfidf(frame: DataFrame, clean_col: str = CLEAN_COLUMN) -> Tfidf:
    """Fits the vocabulary from document frequencies: per batch in Python, summed by Spark."""
    spec = CONTRACT.tfidf

    def batch_frequencies(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield from document_frequencies(batch.column(0), spec).to_arrow().cast(_FREQUENCIES).to_batches()

    n_docs = frame.count()
    frequencies = (
        frame.select(clean_col)
        .mapInArrow(batch_frequencies, "term string, df long")
        .groupBy("term")
        .agg(F.sum("df").alias("df"))
        .where(F.col("df") >= spec.min_df)
        .orderBy(F.desc("df"), F.asc("term"))
        .limit(spec.max_features)
        .collect()
    )
    kept = dict(select_vocabulary({row["term"]: row["df"] for row in frequencies}, spec))
    return Tfidf.from_document_frequencies(kept, n_docs, spec)


def with_tfidf(frame: DataFrame, tfidf: Tfidf, clean_col: str = CLEAN_COLUMN) -> DataFrame:
    """Adds the sparse TF-IDF vector as two arrays: sorted indices and their values."""
    fields = [
        T.StructField(TFIDF_INDICES, T.ArrayType(T.IntegerType(), False), False),
        T.StructField(TFIDF_VALUES, T.ArrayType(T.DoubleType(), False), False),
    ]

    @F.arrow_udf(T.StructType(fields))
    def vectors(cleaned: pa.Array) -> pa.Array:
        counts = tfidf.counts(cleaned)
        offsets = pa.array(counts.indptr.astype("int32"))
        indices = pa.ListArray.from_arrays(offsets, pa.array(counts.indices))
        values = pa.ListArray.from_arrays(offsets, pa.array(tfidf.vectors(counts)))
        return pa.StructArray.from_arrays([indices, values], names=[TFIDF_INDICES, TFIDF_VALUES])

    packed = frame.select("*", vectors(F.col(clean_col)).alias(_PACKED))
    return packed.select(
        *[F.col(c) for c in frame.columns], *[F.col(f"{_PACKED}.{f.name}").alias(f.name) for f in fields]
    )
