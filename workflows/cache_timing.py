"""Runs `pyflyte run workflows/training.py training_pipeline` twice and prints both wall times.

The second run should find ingest, ETL, every training branch and the evaluation in
Flyte's local cache (~/.flyte/local-cache) and only redo the cheap, uncached steps.

    python -m workflows.cache_timing --input PATH [extra pyflyte workflow options...]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).absolute().parents[1]


def run_once(arguments: list[str]) -> float:
    pyflyte = Path(sys.executable).with_name("pyflyte")
    command = [str(pyflyte), "run", "workflows/training.py", "training_pipeline", *arguments]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    first = run_once(arguments)
    second = run_once(arguments)
    print(f"cache timings: first run {first:.1f} s, second run {second:.1f} s ({first / second:.1f}x faster)")


if __name__ == "__main__":
    main()
