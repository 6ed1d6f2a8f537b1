"""A training pipeline killed mid-way: the re-run takes every finished step from Flyte's cache.

The pipeline runs in a child process (Flyte local execution, as `pyflyte run` does) on
600 real reviews and is SIGKILLed as soon as Flyte's local cache holds the Spark ETL's
outputs, i.e. while the model search runs. The re-run must reuse the cached steps, not
redo them: their cache entries keep the time they were stored, and the steps that had
not finished add theirs.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import fixtures

ROWS = 600
ETL_TASK = "workflows.etl.spark_etl"
KILL_DEADLINE_S = 300.0


def _run_pipeline_code(data: Path, out: Path) -> str:
    kwargs = {
        "input": str(data),
        "output_dir": str(out),
        "kinds": "logreg",
        "trials": 2,
        "timeout_s": 60.0,
        "max_per_class": 300,
        "seed": 7,
        "build_bento": False,
    }
    return f"from workflows.training import training_pipeline\nprint(training_pipeline(**{kwargs!r}))\n"


def _cache_entries(home: Path) -> dict[str, float]:
    """Flyte's local cache (a diskcache SQLite file): cache key -> the time it was stored."""
    database = home / ".flyte" / "local-cache" / "cache.db"
    if not database.is_file():
        return {}
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
            return dict(connection.execute("SELECT key, store_time FROM Cache").fetchall())
    except sqlite3.OperationalError:  # created but its table not written yet
        return {}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path, Path]:
    root = tmp_path_factory.mktemp("resume")
    home = root / "home"
    home.mkdir()
    data = root / "kindle_600.csv"
    fixtures.kindle_sample().iloc[:ROWS].to_csv(data)
    env = {
        **os.environ,
        "HOME": str(home),  # flytekit's local cache lives in ~/.flyte
        "BENTOML_HOME": str(root / "bentoml"),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])),
    }
    return env, data, root


def test_a_killed_pipeline_resumes_from_the_cache(setup: tuple[dict[str, str], Path, Path]) -> None:
    env, data, root = setup
    home = Path(env["HOME"])
    code = _run_pipeline_code(data, root / "runs")
    log = (root / "killed.log").open("w")
    child = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + KILL_DEADLINE_S
    try:
        while not any(key.startswith(ETL_TASK) for key in _cache_entries(home)):
            assert child.poll() is None, (root / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the ETL step was never cached"
            time.sleep(0.2)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        log.close()
    assert child.returncode == -signal.SIGKILL
    before = _cache_entries(home)
    assert not any(".train." in key for key in before), "killed too late: the model search had finished"

    rerun = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=KILL_DEADLINE_S
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "champion: logreg" in rerun.stdout
    after = _cache_entries(home)
    redone = [key for key, stored in before.items() if after.get(key) != stored]
    assert not redone, f"finished steps were run again: {redone}"
    assert any(".train." in key for key in set(after) - set(before)), sorted(after)
