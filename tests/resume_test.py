"""A training pipeline killed during its model search: the re-run takes every finished step
from Flyte's cache and finishes only the search trials still owed.

`pyflyte run workflows/pipeline.py training_pipeline` runs in a child process on 600 real
reviews and is SIGKILLed once the kind's Optuna study (in the output folder) holds
finished trials, i.e. while the search runs. The re-run must reuse the cached steps (their
cache entries keep the time they were stored), keep the finished trials as they were, and
run only the missing ones.
"""

from __future__ import annotations

import json
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
TRIALS = 8
KILL_AFTER = 2
ETL_TASK = "workflows.etl.spark_etl"
KILL_DEADLINE_S = 300.0
PYFLYTE = "from flytekit.clis.sdk_in_container.pyflyte import main; main()"


def _pyflyte_run(data: Path, out: Path) -> list[str]:
    settings = {
        "output_dir": str(out),
        "kinds": "logreg",
        "trials": TRIALS,
        "timeout_s": 0,
        "seed": 7,
        "build_bento": False,
    }
    return [
        sys.executable,
        "-c",
        PYFLYTE,
        "run",
        "workflows/pipeline.py",
        "training_pipeline",
        "--input",
        str(data),
        "--settings",
        json.dumps(settings),
    ]


def _finished_trials(out: Path) -> dict[int, tuple[str, float | None]]:
    """Trial number -> (state, value) of the finished trials of the logreg study, if it exists yet."""
    studies = list((out / "optuna").glob("logreg-*.db"))
    if not studies:
        return {}
    try:
        with sqlite3.connect(f"file:{studies[0]}?mode=ro", uri=True, timeout=5) as connection:
            rows = connection.execute(
                "SELECT t.number, t.state, v.value FROM trials t LEFT JOIN trial_values v "
                "ON v.trial_id = t.trial_id WHERE t.state IN ('COMPLETE', 'PRUNED')"
            ).fetchall()
    except sqlite3.OperationalError:  # created but its tables not written yet
        return {}
    return {number: (state, value) for number, state, value in rows}


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
    out = root / "runs"
    command = _pyflyte_run(data, out)
    log = (root / "killed.log").open("w")
    child = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + KILL_DEADLINE_S
    try:
        while len(_finished_trials(out)) < KILL_AFTER:
            assert child.poll() is None, (root / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the search never finished a trial"
            time.sleep(0.05)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        log.close()
    assert child.returncode == -signal.SIGKILL
    before, cached = _finished_trials(out), _cache_entries(home)
    assert KILL_AFTER <= len(before) < TRIALS, "killed too late: the search had finished"
    assert any(key.startswith(ETL_TASK) for key in cached) and not any(".search." in key for key in cached)

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=KILL_DEADLINE_S)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "champion: logreg" in rerun.stdout
    after = _finished_trials(out)
    assert (
        len(after) == TRIALS and {n: after[n] for n in before} == before
    )  # finished trials kept as they were
    rerun_trials = sorted(set(after) - set(before))
    assert len(rerun_trials) == TRIALS - len(before) and min(rerun_trials) > max(
        before
    )  # only the missing ones
    again = _cache_entries(home)
    redone = [key for key, stored in cached.items() if again.get(key) != stored]
    assert not redone, f"finished steps were run again: {redone}"
    assert any(".search." in key for key in set(again) - set(cached)), sorted(again)
