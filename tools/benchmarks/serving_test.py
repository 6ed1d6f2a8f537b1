"""The serving benchmark's own parts on a real server: the FastAPI baseline scores like the
bundle does, and the wrk script and the Python client count real requests and real errors.

The baseline (not the BentoML service, which `services/server_test.py` covers) is the
server here because it starts in seconds; the load tools talk plain HTTP to either.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from tests import fixtures
from tests.fixtures.servers import ServerProcess, started
from tests.fixtures.service import offline, python_path, texts_and_summaries, train_small_bundle
from tools.benchmarks import serving


@pytest.fixture(scope="module")
def reviews() -> pd.DataFrame:
    return fixtures.kindle_reviews()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serving_bench")


@pytest.fixture(scope="module")
def bundle(work: Path, reviews: pd.DataFrame) -> Path:
    return train_small_bundle(reviews.head(600), work / "bundle")


@pytest.fixture(scope="module")
def bodies(work: Path, reviews: pd.DataFrame) -> dict[int, Path]:
    return serving.write_bodies(reviews.head(300), work, batches=(10,))


@pytest.fixture(scope="module")
def baseline(bundle: Path, work: Path) -> Iterator[ServerProcess]:
    server = serving.baseline_server(bundle, work, workers=1)
    with started(server):
        yield server


def test_bodies_are_real_reviews(bodies: dict[int, Path], reviews: pd.DataFrame) -> None:
    known = set(reviews["reviewText"].head(300))
    for size, path in bodies.items():
        lines = path.read_text().splitlines()
        assert len(lines) >= 4
        for line in lines[:20]:
            body = json.loads(line)
            assert len(body["texts"]) == len(body["summaries"]) == size
            assert set(body["texts"]) <= known


def test_baseline_scores_like_the_bundle(
    baseline: ServerProcess, bundle: Path, reviews: pd.DataFrame
) -> None:
    texts, summaries = texts_and_summaries(reviews.iloc[300:320])
    body = {"texts": texts, "summaries": summaries}
    reply = requests.post(f"{baseline.url}/predict", json=body, timeout=30)
    assert reply.status_code == 200
    np.testing.assert_allclose(reply.json()["probabilities"], offline(bundle, texts, summaries), atol=1e-12)
    bad = requests.post(f"{baseline.url}/predict", json={"texts": "not a list"}, timeout=30)
    assert bad.status_code == 422


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (tools/setup.sh installs it)")
def test_wrk_script_counts_requests_and_errors(
    baseline: ServerProcess, bodies: dict[int, Path], work: Path
) -> None:
    served = serving.run_wrk(f"{baseline.url}/predict", bodies[10], concurrency=2, seconds=1)
    assert served["requests"] > 0
    assert served["status_errors"] == served["socket_errors"] == served["timeouts"] == 0
    assert 0 < served["p50_us"] <= served["p95_us"] <= served["p99_us"]
    # Bodies the app refuses (422) are counted as errors, not as throughput.
    broken = work / "broken.jsonl"
    broken.write_text('{"texts": "not a list"}\n')
    refused = serving.run_wrk(f"{baseline.url}/predict", broken, concurrency=1, seconds=1)
    assert refused["status_errors"] == refused["requests"] > 0


def test_python_client_measures_and_announces(baseline: ServerProcess, bodies: dict[int, Path]) -> None:
    command = [sys.executable, "-m", "tools.benchmarks.serving_client", "http", str(baseline.port)]
    command += [str(bodies[1]), "--concurrency", "1,4", "--seconds", "1", "--warmup", "0.2"]
    out = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=120, env={"PYTHONPATH": python_path()}
    ).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["concurrency"] for line in lines] == [1, 1, 4, 4]
    assert [line.get("phase") for line in lines] == ["start", None, "start", None]
    for result in lines[1::2]:
        assert result["requests"] > 0 and result["errors"] == 0
        assert 0 < result["p50_s"] <= result["p95_s"] <= result["p99_s"]
