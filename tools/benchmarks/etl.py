"""ETL: cleaning + features through Spark, `local[2]` and a standalone cluster of two 1-core
workers on this machine, vs the same transform in one pandas process.

All run the `libs.features` kernels (`features_table`; the pandas process through its
pandas view `compute_features`); what differs is the engine around them (Spark's Arrow
batches to Python workers, in one process tree or in executors the workers start, vs one
process). The cluster's rows count its workers' processes too (CPU, peak RSS). Outputs are
compared row by row.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tests import fixtures
from tests.fixtures.spark_cluster import standalone_cluster
from tools.benchmarks.etl_worker import CODEC
from tools.benchmarks.report import Report, Row, run_measured


def make_dataset(rows: int, path: Path, seed: int = 7) -> None:
    """The real Kindle book reviews, replicated in shuffled order to `rows` rows."""
    real = pd.concat(
        [fixtures.kindle_sample()[["reviewText", "summary"]], fixtures.kindle_2018()[["reviewText"]]],
        ignore_index=True,
    )
    order = np.random.default_rng(seed).integers(0, len(real), size=rows)
    frame = real.iloc[order].reset_index(drop=True)
    frame.insert(0, "row_id", np.arange(rows, dtype=np.int64))
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=25_000)


def same_outputs(pandas_out: Path, spark_out: Path) -> bool:
    left = pd.read_parquet(pandas_out).sort_values("row_id").reset_index(drop=True)
    right = pd.read_parquet(spark_out).sort_values("row_id").reset_index(drop=True)
    return left.shape == right.shape and all(left[c].equals(right[c]) for c in left.columns)


def run(report: Report, quick: bool, cores: int = 2) -> None:
    """Each size on its own data set: two sizes show how time and memory grow with the input."""
    for rows in (20_000,) if quick else (250_000, 1_000_000):
        run_size(report, rows, cores)


def measure(
    report: Report, rows: int, system: str, command: list[str], cores: int, also: list[int]
) -> tuple[float, float]:
    """Runs one ETL worker, adds its row (a Spark row adds its warm second run); its rows/s,
    first and warm (pandas: its one run)."""
    out, wall, peak = run_measured(command, also=also)
    first, *warm = json.loads(out.strip().splitlines()[-1])
    cpu = first["jvm_cpu_s"] + first["python_cpu_s"]
    metrics = {
        "rows_per_s": first["rows"] / first["seconds"],
        "transform_s": first["seconds"],
        "wall_s": wall,
        "cpu_s": cpu,
        "jvm_cpu_s": first["jvm_cpu_s"],
        "python_cpu_s": first["python_cpu_s"],
        "rows_per_cpu_s": first["rows"] / cpu,
        "peak_rss_mb": peak / 2**20,
    }
    for again in warm:
        metrics |= {
            "warm_rows_per_s": again["rows"] / again["seconds"],
            "warm_jvm_cpu_s": again["jvm_cpu_s"],
            "warm_python_cpu_s": again["python_cpu_s"],
        }
    report.add(Row("etl", system, {"rows": rows, "parquet": CODEC, "cores": cores}, metrics))
    return metrics["rows_per_s"], metrics.get("warm_rows_per_s", metrics["rows_per_s"])


def run_size(report: Report, rows: int, cores: int) -> None:
    with tempfile.TemporaryDirectory(prefix="etl-bench-") as tmp:
        folder = Path(tmp)
        source = folder / "reviews.parquet"
        make_dataset(rows, source)
        worker = [sys.executable, "-m", "tools.benchmarks.etl_worker"]
        pandas, _ = measure(
            report, rows, "pandas, 1 process", [*worker, "pandas", str(source), str(folder / "pandas")], 1, []
        )
        local = f"spark local[{cores}]"
        command = [*worker, "spark", str(source), str(folder / "local"), str(cores)]
        spark = {local: (measure(report, rows, local, command, cores, []), "local")}
        with standalone_cluster(folder / "cluster", workers=cores, memory_mb=3072) as (master, workers):
            pids = [started.process.pid for started in workers]
            cluster = f"spark standalone, {cores} workers x 1 core"
            command = [*worker, "cluster", str(source), str(folder / "cluster-out"), str(cores)]
            command += [master.master_url, *map(str, pids)]
            spark[cluster] = (measure(report, rows, cluster, command, cores, pids), "cluster-out")
        for system, ((rate, warm), out) in spark.items():
            identical = same_outputs(folder / "pandas", folder / out)
            report.add(
                Row(
                    "etl",
                    f"{system} vs pandas",
                    {"rows": rows},
                    {
                        "speedup": rate / pandas,
                        "warm_speedup": warm / pandas,
                        "identical_outputs": str(identical),
                    },
                )
            )
