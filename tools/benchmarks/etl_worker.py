"""One ETL run in its own process, so its peak memory is its own: `pandas`, `spark` (local
mode) or `cluster` (a standalone master on this machine).

Reads the review Parquet file, computes cleaning + features, writes Parquet, and prints a
JSON list, one {"rows", "seconds", "jvm_cpu_s", "python_cpu_s"} per read-transform-write
span (Spark's session start-up is outside it, as is the interpreter's: the wall time of the
whole process is measured by the caller); Spark runs the job twice, cold then warm. The CPU
is what the process and its children (Spark's JVM and Python workers) spent in the span,
plus, on a cluster, the workers' process trees (their executors and Python workers), whose
pids the caller passes: on a shared machine, what the work cost whatever else ran, split
between the JVMs and Python.
"""

from __future__ import annotations

import json
import sys
import time
from typing import NamedTuple

import pandas as pd
import psutil

from libs.features import compute_features
from tools.benchmarks.report import process_trees

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


class Cpu(NamedTuple):
    """CPU seconds (user + system) by runtime: Spark's JVMs, and Python (this process, Spark's
    Python workers)."""

    jvm: float
    python: float

    def __sub__(self, other: object) -> Cpu:
        assert isinstance(other, Cpu)
        return Cpu(self.jvm - other.jvm, self.python - other.python)


def tree_cpu(*others: int) -> Cpu:
    """CPU of this process, the processes `others` and their living descendants."""
    jvm = python = 0.0
    for process in process_trees([psutil.Process(), *(psutil.Process(pid) for pid in others)]):
        try:
            times, name = process.cpu_times(), process.name()
        except psutil.Error:
            continue
        if name == "java":
            jvm += times.user + times.system
        else:
            python += times.user + times.system
    return Cpu(jvm, python)


class Measured(NamedTuple):
    rows: int
    seconds: float
    cpu: Cpu


def with_pandas(source: str, target: str) -> list[Measured]:
    started, cpu = time.perf_counter(), tree_cpu()
    reviews = pd.read_parquet(source)
    features = compute_features(reviews["reviewText"], reviews["summary"])
    features.insert(0, "row_id", reviews["row_id"].to_numpy())
    features[OUTPUT_COLUMNS].to_parquet(target, index=False, compression=CODEC)
    return [Measured(len(features), time.perf_counter() - started, tree_cpu() - cpu)]


def with_spark(
    source: str, target: str, cores: int, master: str = "", workers: tuple[int, ...] = ()
) -> list[Measured]:
    """The job twice in one session: the first pays the session's warm-up (the JVM's class
    loading and JIT, the Python workers' imports), the second shows the engine warm."""
    from libs.features.spark import local_session, with_features
    from workflows.spark_session import ship_project_code

    conf = {"spark.driver.memory": "4g"} if not master else {"spark.executor.memory": "2g"}
    spark = local_session("etl-benchmark", cores=cores, conf=conf, master=master)
    ship_project_code(spark)
    runs = []
    for attempt in ("", "-warm"):
        started, cpu = time.perf_counter(), tree_cpu(*workers)
        frame = with_features(spark.read.parquet(source)).select(*OUTPUT_COLUMNS)
        frame.write.mode("overwrite").option("compression", CODEC).parquet(target + attempt)
        seconds, cpu = time.perf_counter() - started, tree_cpu(*workers) - cpu
        runs.append(Measured(spark.read.parquet(target + attempt).count(), seconds, cpu))
    spark.stop()
    return runs


def main() -> None:
    """`pandas SOURCE TARGET`, `spark SOURCE TARGET CORES`, `cluster SOURCE TARGET CORES MASTER PID...`."""
    mode, source, target, *rest = sys.argv[1:]
    if mode == "pandas":
        runs = with_pandas(source, target)
    else:
        master, workers = (rest[1], tuple(int(pid) for pid in rest[2:])) if mode == "cluster" else ("", ())
        runs = with_spark(source, target, int(rest[0]), master, workers)
    print(
        json.dumps(
            [
                {"rows": r.rows, "seconds": r.seconds, "jvm_cpu_s": r.cpu.jvm, "python_cpu_s": r.cpu.python}
                for r in runs
            ]
        )
    )


if __name__ == "__main__":
    main()
