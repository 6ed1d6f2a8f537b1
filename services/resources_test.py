"""Bounded resources on real servers (run from the source tree on real bundles):

- the drift feed takes the features the model call computed, with the embedded runner and
  with a separate runner process: production batches hold exactly the features of the
  reviews scored;
- with the drift thread stalled (its shared state folder hangs) and maximal requests
  coming in, the queue stays within its bounds, the rest is dropped and counted, requests
  keep succeeding and the server's memory stays under a stated bound;
- loading a champion compiles the TF-IDF scan, so no request waits for the compiler;
- every MLflow download of a champion is removed once it is loaded or refused (a real
  SQLite registry, real reloads, a refused one included).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import requests

from services.model_source import DOWNLOAD_PREFIX
from tests.fixtures.service import (
    SOURCE_SERVICE,
    Server,
    bundle_version,
    http_call,
    metric_sum,
    offline,
    running,
    scrape,
    source_home,
    tamper,
    texts_and_summaries,
    train_small_bundle,
    wait_until,
)

MAX_ITEMS, MAX_CHARS = 1_000, 20_000  # the service's default request limits
QUEUE_ROWS = 4_000  # the drift queue's row bound in the stall test (default 10,000)
MAXIMAL_REQUESTS = 10
# Growth of the server's process tree (one API worker) over its warm baseline while the
# queue is full. Two maximal requests in flight take about 260 MiB; keeping the bodies
# (or their texts) of the ten requests would add their 190 MiB on top of that.
RSS_GROWTH_BOUND_MIB = 400


@pytest.fixture(scope="module")
def bundle(work: Path, sample: pd.DataFrame) -> Path:
    return train_small_bundle(sample.iloc[:1500], work / "bundle_a")


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all of its descendants."""
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def mib(size: float) -> float:
    return size / 2**20


# --------------------------------------------------------------------------- features once


@pytest.mark.parametrize("embedded", [True, False], ids=["embedded_runner", "runner_process"])
def test_the_drift_feed_takes_the_features_scoring_computed(
    work: Path, bundle: Path, sample: pd.DataFrame, embedded: bool
) -> None:
    from libs.features import CONTRACT, compute_features
    from libs.production import LABEL_COLUMN, read_batches

    name = "embedded" if embedded else "runner"
    env = {"KINDLE_BUNDLE_PATH": str(bundle), "KINDLE_RELOAD_INTERVAL_S": "0"}
    env["KINDLE_RUNNER_EMBEDDED"] = str(embedded).lower()
    rows = sample.iloc[2000:2300].reset_index(drop=True)
    rows.loc[::7, "summary"] = None
    labels: list[int] = []
    with running({name: ("http", env)}, SOURCE_SERVICE, source_home(work), work) as servers:
        server = servers[name]
        for start in range(0, len(rows), 100):
            texts, summaries = texts_and_summaries(rows.iloc[start : start + 100])
            reply = http_call(server, "predict", {"texts": texts, "summaries": summaries})
            assert reply.status_code == 200, reply.text
            expected = offline(bundle, texts, summaries)
            np.testing.assert_allclose(reply.json()["probabilities"], expected, rtol=0, atol=1e-9)
            labels += reply.json()["labels"]
        server.stop()  # the drift feed drains and the batch writer flushes at shutdown
    batches = read_batches(server.state_dir / "batches")
    texts, summaries = texts_and_summaries(rows)
    features = compute_features(texts, summaries)[CONTRACT.numeric_names]
    pd.testing.assert_frame_equal(batches[CONTRACT.numeric_names], features, check_exact=True)
    assert batches[LABEL_COLUMN].tolist() == [str(label) for label in labels]


# --------------------------------------------------------------------------- full queue


def maximal_texts(sample: pd.DataFrame) -> list[str]:
    """MAX_ITEMS distinct texts of MAX_CHARS characters each, cut from the real reviews."""
    corpus = " ".join(sample["reviewText"])
    assert len(corpus) > 2 * MAX_CHARS
    span = len(corpus) - MAX_CHARS
    return [corpus[(i * 7_919) % span :][:MAX_CHARS] for i in range(MAX_ITEMS)]


class RssSampler:
    """Peak resident memory of a server's process tree, sampled every 50 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, tree_rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, tree_rss(self.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def stalled_server(work: Path, bundle: Path) -> Iterator[tuple[Server, Path]]:
    """A server whose drift thread hangs: a FIFO stands where another worker's state file
    would be, and reading it blocks as on a hung network mount, until the test writes it."""
    env = {
        "KINDLE_BUNDLE_PATH": str(bundle),
        "KINDLE_RELOAD_INTERVAL_S": "0",
        "KINDLE_DRIFT_QUEUE_ROWS": str(QUEUE_ROWS),
    }
    with running({"stalled": ("http", env)}, SOURCE_SERVICE, source_home(work), work) as servers:
        server = servers["stalled"]
        fifo = server.state_dir / "drift" / "worker-stalled-elsewhere.json"
        fifo.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(fifo)
        try:
            yield server, fifo
        finally:
            release(fifo)


def release(fifo: Path) -> None:
    """Unblocks the drift thread waiting to read `fifo` (with a state it ignores) and removes
    the FIFO for good."""
    try:
        descriptor = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # released already, or no reader waits on it now
        fifo.unlink(missing_ok=True)
        return
    fifo.unlink()
    os.write(descriptor, b"{}")
    os.close(descriptor)


def test_a_full_drift_queue_keeps_memory_bounded_and_requests_succeeding(
    stalled_server: tuple[Server, Path], sample: pd.DataFrame
) -> None:
    server, fifo = stalled_server
    body = json.dumps({"texts": maximal_texts(sample)}).encode()
    warm = http_call(server, "predict", {"texts": sample["reviewText"].iloc[:10].tolist()})
    assert warm.status_code == 200, warm.text
    baseline = tree_rss(server.process.pid)

    def maximal() -> tuple[int, int, int]:
        reply = requests.post(
            f"{server.url}/predict", data=body, headers={"content-type": "application/json"}, timeout=300
        )
        labels = len(reply.json()["labels"]) if reply.status_code == 200 else 0
        return reply.status_code, labels, tree_rss(server.process.pid)

    started = time.monotonic()
    with RssSampler(server.process.pid) as sampler, ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda _: maximal(), range(MAXIMAL_REQUESTS)))
    elapsed = time.monotonic() - started
    assert [status for status, _, _ in outcomes] == [200] * MAXIMAL_REQUESTS
    assert all(labels == MAX_ITEMS for _, labels, _ in outcomes)

    sent = MAXIMAL_REQUESTS * MAX_ITEMS
    dropped = metric_sum(scrape(server), "kindle_drift_dropped_rows_total")
    # Queued: at most QUEUE_ROWS; taken by the thread before it hung: the first request or two.
    # So many drops also prove the thread was stalled all along.
    assert sent - QUEUE_ROWS - 2 * MAX_ITEMS <= dropped <= sent - QUEUE_ROWS
    after = [rss for _, _, rss in outcomes]
    print(
        f"\nfull drift queue: {MAXIMAL_REQUESTS} requests of {MAX_ITEMS} x {MAX_CHARS} characters "
        f"({mib(len(body)):.1f} MiB each) in {elapsed:.1f} s, all 200; rows sent {sent:,}, dropped "
        f"{dropped:,.0f} (queue bound {QUEUE_ROWS:,} rows); server tree RSS: {mib(baseline):.0f} MiB "
        f"before, {mib(after[1]):.0f} MiB after the 2nd request, {mib(after[-1]):.0f} MiB after the "
        f"last, peak {mib(sampler.peak):.0f} MiB (growth bound {RSS_GROWTH_BOUND_MIB:,} MiB)"
    )
    # The queue is full and holds no more than its bound while the thread is stalled.
    assert metric_sum(scrape(server), "kindle_drift_queue_rows") == QUEUE_ROWS
    assert mib(sampler.peak - baseline) < RSS_GROWTH_BOUND_MIB
    # Full queue or not, more requests do not mean more memory.
    assert mib(after[-1] - after[1]) < 64, [round(mib(rss)) for rss in after]

    release(fifo)
    wait_until(
        lambda: metric_sum(scrape(server), "kindle_drift_window_rows") >= QUEUE_ROWS,
        "the drift thread working through the queue after the state folder came back",
        server,
    )


# --------------------------------------------------------------------------- MLflow downloads


MODEL_NAME = "kindle-serving-test"
SERVED_ALIAS = "serving"  # moved by the test, so a version can be corrupted before it is served


def corrupt_stored_bundle(store: Path, version: str) -> None:
    """Damages the registry's stored copy of the bundle `version` (one file's bytes)."""
    manifests = [p for p in store.rglob("manifest.json") if bundle_version(p.parent) == version]
    assert manifests, f"bundle {version} not found under {store}"
    for manifest in manifests:
        tamper(manifest.parent)


def test_each_mlflow_download_is_removed_once_loaded_or_refused(
    work: Path, bundle: Path, sample: pd.DataFrame
) -> None:
    """Three champions in a row, the last one damaged in the registry's store: the server
    never keeps a download, and leaves nothing else behind in its temporary folder."""
    from mlflow import MlflowClient

    from libs.models.training.settings import TrainingSettings
    from libs.models.training.tracking import register as register_version

    store = work / "mlflow"
    training = TrainingSettings(
        output_dir=store, mlflow_tracking_uri=f"sqlite:///{store / 'mlflow.db'}", model_name=MODEL_NAME
    )
    client = MlflowClient(training.tracking_uri())

    def register(path: Path) -> str:
        return str(register_version(path, training).version)

    def serve(registered: str) -> None:
        client.set_registered_model_alias(MODEL_NAME, SERVED_ALIAS, registered)

    bundle_b = train_small_bundle(sample.iloc[1500:2700], work / "bundle_b")
    bundle_c = train_small_bundle(sample.iloc[2700:3500], work / "bundle_c")
    serve(register(bundle))
    temp = work / "server_tmp"
    temp.mkdir()
    env = {
        "KINDLE_MLFLOW_TRACKING_URI": training.tracking_uri(),
        "KINDLE_MODEL_NAME": MODEL_NAME,
        "KINDLE_MLFLOW_ALIAS": SERVED_ALIAS,
        "KINDLE_RELOAD_INTERVAL_S": "0.3",
        "TMPDIR": str(temp),  # where the server's downloads go, watched here
    }

    def served(server: Server) -> str:
        return http_call(server, "metadata", {}).json()["model"]["version"]

    with running({"mlflow": ("http", env)}, SOURCE_SERVICE, source_home(work), work) as servers:
        server = servers["mlflow"]
        assert served(server) == bundle_version(bundle)
        assert list(temp.glob(f"{DOWNLOAD_PREFIX}*")) == []
        left_at_start = set(temp.iterdir())  # the server's own temporary files, if any

        serve(register(bundle_b))
        wait_until(lambda: served(server) == bundle_version(bundle_b), "bundle B served", server)
        assert list(temp.glob(f"{DOWNLOAD_PREFIX}*")) == []

        registered_c = register(bundle_c)
        corrupt_stored_bundle(store, bundle_version(bundle_c))
        serve(registered_c)
        wait_until(
            lambda: metric_sum(scrape(server), "kindle_model_reloads_total", result="failed") >= 1,
            "the refused reload of the damaged bundle C",
            server,
        )
        assert served(server) == bundle_version(bundle_b)
        refusals = [line for line in server.output() if '"result": "failed"' in line]
        # It was downloaded where this test watches, and that download is gone.
        assert len(refusals) == 1 and f"{temp}/{DOWNLOAD_PREFIX}" in refusals[0], refusals
        assert list(temp.glob(f"{DOWNLOAD_PREFIX}*")) == []
        assert set(temp.iterdir()) == left_at_start  # three downloads, nothing left behind


def test_loading_a_champion_compiles_the_tfidf_scan_before_any_request(bundle: Path) -> None:
    """Compiling takes seconds without numba's cache: the load pays it, not the first request."""
    script = (
        "from libs.features.counting import _count\n"
        "from services import champion\n"
        "assert not _count.signatures\n"
        "assert champion.load().ready\n"
        "print(len(_count.signatures))\n"
    )
    env = {**os.environ, "KINDLE_BUNDLE_PATH": str(bundle), "KINDLE_MLFLOW_TRACKING_URI": ""}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
