"""The serving benchmark's own parts on a real server: the FastAPI baseline scores like the
bundle does, and the wrk script and the Python client count real requests and real errors.

The baseline (not the BentoML service, which `services/server_test.py` covers) is the
server here because it starts in seconds; the load tools talk plain HTTP to either.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from tests import fixtures
from tests.fixtures.servers import ServerProcess, started
from tests.fixtures.service import offline, python_path, texts_and_summaries, train_small_bundle
from tests.fixtures.tools import require_tool
from tools.benchmarks import serving
from tools.benchmarks.serving_profile import OTHER, Sampler, stage_of


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
    return serving.write_bodies(reviews.head(300), work, batches=(10, 50))


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


def test_wrk_script_counts_requests_and_errors(
    baseline: ServerProcess, bodies: dict[int, Path], work: Path
) -> None:
    require_tool("wrk")
    served = serving.run_wrk(f"{baseline.url}/predict", bodies[10], 10, concurrency=2, seconds=1)
    assert served["requests"] > 0
    assert served["status_errors"] == served["socket_errors"] == served["timeouts"] == 0
    assert 0 < served["p50_us"] <= served["p95_us"] <= served["p99_us"]
    # Bodies the app refuses (422) are counted as errors, not as throughput.
    broken = work / "broken.jsonl"
    broken.write_text('{"texts": "not a list"}\n')
    refused = serving.run_wrk(f"{baseline.url}/predict", broken, 1, concurrency=1, seconds=1)
    assert refused["status_errors"] == refused["requests"] > 0


class Counting(BaseHTTPRequestHandler):
    """Answers every POST with `{}` over keep-alive HTTP/1.1, counting connections and
    requests, and closes a connection whose request asks for it (as real servers do)."""

    protocol_version = "HTTP/1.1"
    connections = 0
    requests = 0

    def setup(self) -> None:
        type(self).connections += 1
        super().setup()

    def do_POST(self) -> None:
        type(self).requests += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        closing = self.headers.get("Connection", "").lower() == "close"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        if closing:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_: object) -> None:
        pass


@pytest.mark.parametrize("size", [1, 10, 50])
def test_wrk_opens_a_new_connection_about_once_per_50_reviews(bodies: dict[int, Path], size: int) -> None:
    """What spreads the load over a server's workers: new connections, at a known rate."""
    require_tool("wrk")
    Counting.connections = Counting.requests = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Counting)  # port 0: the kernel's pick, held
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        measured = serving.run_wrk(f"http://127.0.0.1:{server.server_port}/predict", bodies[size], size, 2, 1)
    finally:
        server.shutdown()
        server.server_close()
    assert measured["socket_errors"] == measured["status_errors"] == 0
    every = max(1, serving.RECONNECT_REVIEWS // size)
    # Each thread's counter closes one connection per `every` requests it sends, plus the two
    # first connections; requests in flight when wrk stops are sent but not counted.
    expected = Counting.requests / every + 2
    assert expected * 0.8 - 2 <= Counting.connections <= expected * 1.2 + 2, (Counting.connections, expected)


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


def test_profile_finds_the_model_in_a_loaded_server(
    baseline: ServerProcess, bodies: dict[int, Path], work: Path
) -> None:
    """py-spy on a real server under load: the busy samples split into stages that sum to
    one, and a baseline that only scores spends most of its CPU in features and model."""
    require_tool("wrk")
    sampler = Sampler(baseline.process.pid, seconds=3, out=work / "samples.txt")
    serving.run_wrk(f"{baseline.url}/predict", bodies[50], 50, concurrency=2, seconds=2)
    shares = sampler.stop()
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["features"] + shares["model"] > 0.5, shares
    assert shares["batch log thread"] == shares["drift thread"] == 0.0  # the baseline has neither


def test_profile_stages_take_precedence_and_waits_are_idle() -> None:
    model_in_middleware = "run (asyncio/events.py:1);call (services/transport.py:9);predict_features (x.py:3)"
    assert stage_of(model_in_middleware) == "model"
    assert stage_of("_run (services/drift_feed.py:1);Condition.wait (threading.py:331)") is None
    assert stage_of("_run_once (asyncio/base_events.py:1);data_received (h11/_connection.py:4)") == OTHER
