"""ETL: cleaning + features through Spark local[2] vs the same transform in one pandas process.

Both run the `libs.features` kernels (`features_table`; the pandas process through its
pandas view `compute_features`); what differs is the engine around them (Spark's Arrow
batches to two Python workers vs one process). Outputs are compared row by row.
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


def run_size(report: Report, rows: int, cores: int) -> None:
    with tempfile.TemporaryDirectory(prefix="etl-bench-") as tmp:
        folder = Path(tmp)
        make_dataset(rows, folder / "reviews.parquet")
        results = {}
        for system, mode in [("pandas, 1 process", "pandas"), (f"spark local[{cores}]", "spark")]:
            extra = [str(cores)] if mode == "spark" else []
            command = [sys.executable, "-m", "tools.benchmarks.etl_worker", mode]
            command += [str(folder / "reviews.parquet"), str(folder / f"{mode}-out"), *extra]
            out, wall, peak = run_measured(command)
            measured = json.loads(out.strip().splitlines()[-1])
            results[mode] = measured["rows"] / measured["seconds"]
            report.add(
                Row(
                    "etl",
                    system,
                    {"rows": rows, "parquet": CODEC, "cores": cores if extra else 1},
                    {
                        "rows_per_s": measured["rows"] / measured["seconds"],
                        "transform_s": measured["seconds"],
                        "wall_s": wall,
                        "cpu_s": measured["cpu_s"],
                        "rows_per_cpu_s": measured["rows"] / measured["cpu_s"],
                        "peak_rss_mb": peak / 2**20,
                    },
                )
            )
        identical = same_outputs(folder / "pandas-out", folder / "spark-out")
        report.add(
            Row(
                "etl",
                "spark vs pandas",
                {"rows": rows},
                {"speedup": results["spark"] / results["pandas"], "identical_outputs": str(identical)},
            )
        )
