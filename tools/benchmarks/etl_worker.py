"""One ETL run in its own process, so its peak memory is its own: `pandas` or `spark`.

Reads the review Parquet file, computes cleaning + features, writes Parquet, and prints
{"rows": n, "seconds": s, "cpu_s": c} for that read-transform-write span (Spark's session
start-up is outside it, as is the interpreter's: the wall time of the whole process is
measured by the caller). `cpu_s` is the CPU time the process and its children (Spark's JVM
and Python workers) spent in the span: on a shared machine, what the work cost whatever
else ran.
"""

from __future__ import annotations

import json
import sys
import time

import pandas as pd
import psutil

from libs.features import compute_features

CODEC = "snappy"
"""Both engines write Parquet with the same codec, so neither pays more for compression."""
OUTPUT_COLUMNS = [
    "row_id",
    "clean_text",
    "text_len",
    "caps_ratio",
    "exclamation_count",
    "question_count",
    "word_count",
    "avg_word_length",
]


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its living descendants."""
    total = 0.0
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def with_pandas(source: str, target: str) -> tuple[int, float, float]:
    started, cpu = time.perf_counter(), tree_cpu_seconds()
    reviews = pd.read_parquet(source)
    features = compute_features(reviews["reviewText"], reviews["summary"])
    features.insert(0, "row_id", reviews["row_id"].to_numpy())
    features[OUTPUT_COLUMNS].to_parquet(target, index=False, compression=CODEC)
    return len(features), time.perf_counter() - started, tree_cpu_seconds() - cpu


def with_spark(source: str, target: str, cores: int) -> tuple[int, float, float]:
    from libs.features.spark import local_session, with_features

    spark = local_session("etl-benchmark", cores=cores, conf={"spark.driver.memory": "4g"})
    started, cpu = time.perf_counter(), tree_cpu_seconds()
    frame = with_features(spark.read.parquet(source)).select(*OUTPUT_COLUMNS)
    frame.write.mode("overwrite").option("compression", CODEC).parquet(target)
    seconds, cpu = time.perf_counter() - started, tree_cpu_seconds() - cpu
    rows = spark.read.parquet(target).count()
    spark.stop()
    return rows, seconds, cpu


def main() -> None:
    mode, source, target = sys.argv[1:4]
    rows, seconds, cpu = (
        with_pandas(source, target) if mode == "pandas" else with_spark(source, target, int(sys.argv[4]))
    )
    print(json.dumps({"rows": rows, "seconds": seconds, "cpu_s": cpu}))


if __name__ == "__main__":
    main()
