"""One ETL run in its own process, so its peak memory is its own: `pandas`, `spark` (local
mode) or `cluster` (a standalone master on this machine).

Reads the review Parquet file, computes cleaning + features, writes Parquet, and prints
{"rows": n, "seconds": s, "cpu_s": c} for that read-transform-write span (Spark's session
start-up is outside it, as is the interpreter's: the wall time of the whole process is
measured by the caller). `cpu_s` is the CPU time the process and its children (Spark's JVM
and Python workers) spent in the span, plus, on a cluster, the workers' process trees
(their executors and Python workers), whose pids the caller passes: on a shared machine,
what the work cost whatever else ran.
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


def tree_cpu_seconds(*others: int) -> float:
    """User + system CPU seconds of this process, the processes `others` and their living
    descendants."""
    roots = [psutil.Process(), *(psutil.Process(pid) for pid in others)]
    total = 0.0
    for process in [tree for root in roots for tree in (root, *root.children(recursive=True))]:
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


def with_spark(
    source: str, target: str, cores: int, master: str = "", workers: tuple[int, ...] = ()
) -> tuple[int, float, float]:
    from libs.features.spark import local_session, with_features
    from workflows.spark_session import ship_project_code

    conf = {"spark.driver.memory": "4g"} if not master else {"spark.executor.memory": "2g"}
    spark = local_session("etl-benchmark", cores=cores, conf=conf, master=master)
    ship_project_code(spark)
    started, cpu = time.perf_counter(), tree_cpu_seconds(*workers)
    frame = with_features(spark.read.parquet(source)).select(*OUTPUT_COLUMNS)
    frame.write.mode("overwrite").option("compression", CODEC).parquet(target)
    seconds, cpu = time.perf_counter() - started, tree_cpu_seconds(*workers) - cpu
    rows = spark.read.parquet(target).count()
    spark.stop()
    return rows, seconds, cpu


def main() -> None:
    """`pandas SOURCE TARGET`, `spark SOURCE TARGET CORES`, `cluster SOURCE TARGET CORES MASTER PID...`."""
    mode, source, target, *rest = sys.argv[1:]
    if mode == "pandas":
        rows, seconds, cpu = with_pandas(source, target)
    else:
        master, workers = (rest[1], tuple(int(pid) for pid in rest[2:])) if mode == "cluster" else ("", ())
        rows, seconds, cpu = with_spark(source, target, int(rest[0]), master, workers)
    print(json.dumps({"rows": rows, "seconds": seconds, "cpu_s": cpu}))


if __name__ == "__main__":
    main()
