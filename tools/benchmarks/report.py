"""Results of a benchmark run: machine facts, one row per measured system, JSON + Markdown."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import psutil

VERSIONED = [
    "bentoml",
    "fastapi",
    "uvicorn",
    "pyspark",
    "pandas",
    "scikit-learn",
    "optuna",
    "mlflow",
    "flytekit",
]


@dataclass
class Row:
    benchmark: str
    system: str
    settings: dict[str, object]
    metrics: dict[str, float | int | str]


@dataclass
class Report:
    mode: str
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    machine: dict[str, object] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)

    def __post_init__(self) -> None:
        cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if "model name" in line), "?")
        self.machine = {
            "cores": os.cpu_count(),
            "cpu": cpu,
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "versions": {name: _version(name) for name in VERSIONED},
        }

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(f"  {row.benchmark:<10} {row.system:<34} {_fmt(row.metrics)}", flush=True)

    def write(self, folder: Path) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        data = {
            "mode": self.mode,
            "started": self.started,
            "machine": self.machine,
            "rows": [asdict(row) for row in self.rows],
        }
        json_path = folder / "bench.json"
        json_path.write_text(json.dumps(data, indent=2))
        md_path = folder / "bench.md"
        md_path.write_text(self.markdown())
        return json_path, md_path

    def markdown(self) -> str:
        m = self.machine
        lines = [
            f"Benchmark ({self.mode}), {self.started}, {m['cores']} cores, {m['cpu']}, {m['memory_gb']} GB",
            "",
        ]
        for benchmark in dict.fromkeys(row.benchmark for row in self.rows):
            rows = [row for row in self.rows if row.benchmark == benchmark]
            keys = list(dict.fromkeys(key for row in rows for key in row.metrics))
            lines += [
                f"### {benchmark}",
                "",
                "| system | settings | " + " | ".join(keys) + " |",
                "|---|---|" + "---|" * len(keys),
            ]
            for row in rows:
                settings = ", ".join(f"{k}={v}" for k, v in row.settings.items())
                values = " | ".join(_cell(row.metrics.get(key, "")) for key in keys)
                lines.append(f"| {row.system} | {settings} | {values} |")
            lines.append("")
        return "\n".join(lines)


def process_trees(roots: Sequence[psutil.Process]) -> list[psutil.Process]:
    """`roots` and their living descendants (psutil.Error if a root is gone)."""
    return [process for root in roots for process in (root, *root.children(recursive=True))]


class PeakRss:
    """Samples the resident memory of a process and its children (Spark's JVM and workers),
    plus the process trees of `also` (a cluster's workers, which are not its children)."""

    def __init__(self, pid: int, interval: float = 0.2, also: Sequence[int] = ()) -> None:
        self.peak = 0
        self._roots = [psutil.Process(root) for root in (pid, *also)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, sum(_rss(p) for p in process_trees(self._roots)))
            except psutil.Error:
                return
            time.sleep(interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_measured(
    command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, also: Sequence[int] = ()
) -> tuple[str, float, int]:
    """Runs a command to completion: (stdout, wall seconds, peak RSS bytes of its process tree
    and of the trees of `also`).

    `env` is the command's whole environment (None: this process's).
    """
    start = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd
    )
    sampler = PeakRss(process.pid, also=also)
    out, err = process.communicate()
    peak = sampler.stop()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{err[-4000:]}")
    return out, time.perf_counter() - start, peak


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.Error:
        return 0


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def _cell(value: object) -> str:
    return (
        f"{value:,.3g}"
        if isinstance(value, float) and abs(value) < 1000
        else (f"{value:,.0f}" if isinstance(value, float | int) else str(value))
    )


def _fmt(metrics: dict[str, float | int | str]) -> str:
    return "  ".join(f"{k}={_cell(v)}" for k, v in metrics.items())
