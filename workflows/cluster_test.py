"""The Spark tasks on a real standalone cluster: a master and two workers of one core each, as
separate processes whose environment holds no part of the repository. `ingest` and
`spark_etl` run there through the settings a user sets (KINDLE_SPARK_MASTER,
KINDLE_SPARK_CONF) and must give exactly what `local[2]` gives on the Kindle files: the same
rows, splits, features and vocabularies, bit for bit. The event log shows the work ran on
both workers' executors; a worker killed mid-job costs nothing but its tasks, which Spark
runs again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd
import pytest

import tests
from tests import fixtures
from tests.fixtures.spark_cluster import (
    SparkMaster,
    SparkWorker,
    dependency_path,
    event_log,
    standalone_cluster,
)
from tests.fixtures.spark_job import INGESTED

ROOT = Path(tests.__file__).parent.parent
JOB_TIMEOUT_S = 600  # one job: about 80 s alone
OUTPUTS = ("reviews", "train", "validation", "test", "reference")


@pytest.fixture(scope="module")
def kindle_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both Kindle book files as one input folder: two files, so two ingest tasks."""
    folder = tmp_path_factory.mktemp("kindle")
    for name in (fixtures.KINDLE_SAMPLE, fixtures.KINDLE_2018):
        (folder / name).symlink_to(fixtures.path(name))
    return folder


def start_job(master: str, source: Path, work: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """The job (`tests.fixtures.spark_job`) as its own driver process; the import path it
    passes its executors (Flyte's Spark plugin forwards PYTHONPATH) holds no checkout."""
    work.mkdir(parents=True)
    (work / "events").mkdir()
    conf = {
        "spark.executor.memory": "1g",
        "spark.eventLog.enabled": "true",
        "spark.eventLog.compress": "false",
        "spark.eventLog.dir": (work / "events").as_uri(),
    }
    env = {
        **os.environ,
        "PYTHONPATH": dependency_path(),
        "HOME": str(work),  # flytekit's local cache: a fresh one
        "PYTHONUNBUFFERED": "1",
        "KINDLE_SPARK_MASTER": master,
        "KINDLE_SPARK_CONF": json.dumps(conf),
    }
    env.pop("PYSPARK_PYTHON", None)
    log = (work / "driver.log").open("wb")
    command = [sys.executable, "-m", "tests.fixtures.spark_job", str(source), str(work / "out")]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), work


def finish(job: subprocess.Popen[bytes], work: Path) -> Path:
    try:
        code = job.wait(timeout=JOB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        job.kill()
        raise
    log = (work / "driver.log").read_text(errors="replace")
    assert code == 0, f"the job failed ({code}):\n{log[-6000:]}"
    return work / "out"


def run_job(master: str, source: Path, work: Path) -> Path:
    return finish(*start_job(master, source, work))


@pytest.fixture(scope="module")
def local_outputs(kindle_files: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_job("local[2]", kindle_files, tmp_path_factory.mktemp("local") / "job")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SparkMaster, list[SparkWorker]]]:
    with standalone_cluster(tmp_path_factory.mktemp("cluster")) as started:
        yield started


def assert_same_outputs(left: Path, right: Path) -> None:
    for name in OUTPUTS:
        pd.testing.assert_frame_equal(
            pd.read_parquet(left / f"{name}.parquet"),
            pd.read_parquet(right / f"{name}.parquet"),
            check_exact=True,
        )
    for name in ("search_tfidf.json", "final_tfidf.json"):
        assert (left / name).read_bytes() == (right / name).read_bytes(), name
    assert (
        json.loads((left / "run.json").read_text())["etl_stats"]
        == json.loads((right / "run.json").read_text())["etl_stats"]
    )


def executor_workers(events: list[dict[str, Any]]) -> dict[str, int]:
    """Executor id -> the web UI port of the worker that ran it (from its log URLs)."""
    return {
        event["Executor ID"]: urlparse(event["Executor Info"]["Log Urls"]["stderr"]).port
        for event in events
        if event["Event"] == "SparkListenerExecutorAdded"
    }


def task_ends(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in events if event["Event"] == "SparkListenerTaskEnd"]


def test_the_cluster_gives_local_s_outputs_bit_for_bit_from_both_workers(
    cluster: tuple[SparkMaster, list[SparkWorker]], kindle_files: Path, local_outputs: Path, tmp_path: Path
) -> None:
    master, workers = cluster
    for worker in workers:  # nothing of the checkout reaches the executors through the workers
        assert "PYTHONPATH" not in worker.environment()
    out = run_job(master.master_url, kindle_files, tmp_path / "job")
    assert_same_outputs(local_outputs, out)
    run = json.loads((out / "run.json").read_text())
    assert run["master"] == master.master_url
    for probe in run["executor_imports"]:  # the executors import the zip the task shipped
        assert ".zip" in probe["libs_features"] and "kindle-" in probe["libs_features"], probe
        assert probe["checkout_on_path"] == [], probe
    events = event_log(tmp_path / "job" / "events")
    ran_on = executor_workers(events)
    successes = Counter(
        ran_on[end["Task Info"]["Executor ID"]]
        for end in task_ends(events)
        if end["Task End Reason"]["Reason"] == "Success"
    )
    assert set(successes) == {worker.port for worker in workers}, successes
    assert min(successes.values()) >= 5, successes


def test_a_worker_killed_mid_job_costs_only_a_rerun_of_its_tasks(
    cluster: tuple[SparkMaster, list[SparkWorker]], kindle_files: Path, local_outputs: Path, tmp_path: Path
) -> None:
    master, workers = cluster
    victim = workers[1]
    job, work = start_job(master.master_url, kindle_files, tmp_path / "job")
    started_before_etl = None
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline and job.poll() is None:
        started, finished = victim.task_counts()
        if started_before_etl is None and (work / "out" / INGESTED).exists():
            started_before_etl = started
        if started_before_etl is not None and started >= started_before_etl + 3 and started > finished:
            victim.kill()  # in the ETL, a few of its tasks in, one of them running
            break
        time.sleep(0.02)
    assert job.poll() is None, "the job ended before the worker could be killed mid-way"
    out = finish(job, work)
    assert_same_outputs(local_outputs, out)
    events = event_log(work / "events")
    lost = {executor for executor, port in executor_workers(events).items() if port == victim.port}
    removed = {e["Executor ID"] for e in events if e["Event"] == "SparkListenerExecutorRemoved"}
    assert lost and lost <= removed
    failed_on_lost = [
        end
        for end in task_ends(events)
        if end["Task Info"]["Executor ID"] in lost and end["Task End Reason"]["Reason"] != "Success"
    ]
    resubmitted = [
        e
        for e in events
        if e["Event"] == "SparkListenerStageSubmitted" and e["Stage Info"]["Stage Attempt ID"] > 0
    ]
    assert failed_on_lost or resubmitted, "no task of the lost executor ran again"
