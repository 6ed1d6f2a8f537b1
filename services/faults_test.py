"""Faults on real servers: a broken new champion must not replace a good one, a dead
drift webhook must not touch predictions, and a server told to stop keeps the production
rows it holds.

Servers run straight from the source tree (`bentoml serve services.service:svc`) on a
bundle folder, which is what reloading follows; two servers start once per module.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
import pandas as pd
import pytest
import requests

from services.settings import ServiceSettings
from tests.fixtures.service import (
    SOURCE_SERVICE,
    Server,
    bundle_version,
    grpc_call,
    http_call,
    metric_sum,
    offline,
    running,
    scrape,
    source_home,
    tamper,
    texts_and_summaries,
    wait_until,
)
from tests.fixtures.service import train_small_bundle as train

if TYPE_CHECKING:
    from libs.models.training.settings import TrainingSettings

RELOAD_INTERVAL_S = 0.3


@pytest.fixture(scope="module")
def probe(sample: pd.DataFrame) -> pd.DataFrame:
    return sample.sample(n=20, random_state=11).reset_index(drop=True)


@pytest.fixture(scope="module")
def bundles(work: Path, sample: pd.DataFrame) -> dict[str, Path]:
    """A and B: two real champions trained on different reviews; broken: A with a tampered file."""
    a = train(sample.iloc[:1500], work / "bundle_a")
    b = train(sample.iloc[1500:2700], work / "bundle_b")
    broken = work / "bundle_broken"
    shutil.copytree(a, broken)
    tamper(broken)
    return {"a": a, "b": b, "broken": broken}


class HangingEndpoint:
    """A TCP listener that accepts connections and never answers: the worst webhook receiver."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/drift"

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(connection)  # held open, never read from or written to

    def close(self) -> None:
        for connection in self.accepted:
            connection.close()
        self.sock.close()


def swap_link(link: Path, target: Path) -> None:
    """Points `link` at `target` atomically (a new symlink renamed over the old one)."""
    staged = link.with_name(f".{link.name}.new")
    staged.unlink(missing_ok=True)
    staged.symlink_to(target)
    os.replace(staged, link)


@pytest.fixture(scope="module")
def hanging() -> Iterator[HangingEndpoint]:
    endpoint = HangingEndpoint()
    yield endpoint
    endpoint.close()


@pytest.fixture(scope="module")
def servers(work: Path, bundles: dict[str, Path], hanging: HangingEndpoint) -> Iterator[dict[str, Server]]:
    live = work / "live_bundle"
    live.symlink_to(bundles["a"])
    envs = {
        "reload": {"KINDLE_BUNDLE_PATH": str(live), "KINDLE_RELOAD_INTERVAL_S": str(RELOAD_INTERVAL_S)},
        "webhook": {
            "KINDLE_BUNDLE_PATH": str(bundles["a"]),
            "KINDLE_DRIFT_WEBHOOK_URL": hanging.url,
            "KINDLE_RELOAD_INTERVAL_S": "0",
        },
    }
    specs = {name: ("http", env) for name, env in envs.items()}
    with running(specs, SOURCE_SERVICE, source_home(work), work) as started:
        yield started


def predict(server: Server, rows: pd.DataFrame) -> dict:
    texts, summaries = texts_and_summaries(rows)
    reply = http_call(server, "predict", {"texts": texts, "summaries": summaries})
    assert reply.status_code == 200, reply.text
    return reply.json()


def served_version(server: Server) -> str:
    return http_call(server, "metadata", {}).json()["model"]["version"]


def reloads_in(metrics: dict[str, float], result: str) -> float:
    return metric_sum(metrics, "kindle_model_reloads_total", result=result)


def reloads(server: Server, result: str) -> float:
    return reloads_in(scrape(server), result)


def test_a_broken_new_champion_is_refused_and_a_good_one_is_swapped_in(
    servers: dict[str, Server], bundles: dict[str, Path], probe: pd.DataFrame, work: Path
) -> None:
    server = servers["reload"]
    version_a, version_b = bundle_version(bundles["a"]), bundle_version(bundles["b"])
    assert version_a != version_b
    before = predict(server, probe)
    assert before["model_version"] == served_version(server) == version_a

    swap_link(work / "live_bundle", bundles["broken"])
    wait_until(lambda: reloads(server, "failed") >= 1, "the failed reload", server)

    after = predict(server, probe)
    assert after["model_version"] == served_version(server) == version_a
    np.testing.assert_allclose(after["probabilities"], before["probabilities"], rtol=0, atol=1e-12)
    assert requests.get(f"{server.url}/readyz", timeout=5).status_code == 200
    failures = [
        entry
        for line in server.tail(2000).splitlines()
        if line.startswith("{") and (entry := json.loads(line)).get("event") == "model_reload"
    ]
    assert len(failures) == 1, failures
    assert failures[0]["level"] == "ERROR" and failures[0]["result"] == "failed"
    assert "checksum mismatch" in failures[0]["reason"] and failures[0]["served"] == version_a
    time.sleep(10 * RELOAD_INTERVAL_S)  # the same broken bundle is not tried again
    assert reloads(server, "failed") == 1
    assert metric_sum(scrape(server), "kindle_model_info", model_version=version_a) == 1

    swap_link(work / "live_bundle", bundles["b"])
    wait_until(lambda: served_version(server) == version_b, "bundle B served", server)
    texts, summaries = texts_and_summaries(probe)
    now = predict(server, probe)
    assert now["model_version"] == version_b
    np.testing.assert_allclose(now["probabilities"], offline(bundles["b"], texts, summaries), atol=1e-9)
    metrics = scrape(server)
    assert metric_sum(metrics, "kindle_model_reloads_total", result="loaded") == 1
    assert metric_sum(metrics, "kindle_model_info", model_version=version_b) == 1
    assert metric_sum(metrics, "kindle_model_info", model_version=version_a) == 0


TRANSIENT_MODEL = "kindle-transient-test"


def mlflow_registry(folder: Path, *champions: Path) -> TrainingSettings:
    """A real SQLite MLflow registry in `folder` with `champions` registered and promoted in turn."""
    from libs.models.training.settings import TrainingSettings
    from libs.models.training.tracking import promote, register

    training = TrainingSettings(
        output_dir=folder, mlflow_tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", model_name=TRANSIENT_MODEL
    )
    for bundle in champions:
        promote(str(register(bundle, training).version), training)
    return training


@contextmanager
def files_gone(store: Path, version: str) -> Iterator[None]:
    """Bundle `version`'s models moved out of MLflow's artifact store (so its download fails
    while the registry still answers), and back at exit."""
    manifests = [p for p in store.rglob("manifest.json") if bundle_version(p.parent) == version]
    assert manifests, f"bundle {version} not found under {store}"
    models = {next(up for up in manifest.parents if (up / "MLmodel").exists()) for manifest in manifests}
    moved = [(model, model.with_name(f"{model.name}.hidden")) for model in models]
    for model, away in moved:
        model.rename(away)
    try:
        yield
    finally:
        for model, away in moved:
            away.rename(model)


def eventually(condition: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    """Whether `condition()` holds within `timeout_s` (checked every 0.1 s)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def reload_events(server: Server, result: str) -> list[dict[str, Any]]:
    return [
        entry
        for line in server.tail(4000).splitlines()
        if line.startswith("{")
        and (entry := json.loads(line)).get("event") == "model_reload"
        and entry["result"] == result
    ]


def test_a_champion_that_cannot_be_fetched_for_a_while_is_served_once_it_can(
    work: Path, bundles: dict[str, Path]
) -> None:
    """B is promoted while its files are gone from MLflow's artifact store (for a few
    seconds): the worker keeps serving A, shows it is behind, tries B again with exponential
    backoff, and serves B once its files are back. Nothing is refused."""
    from libs.models.training.tracking import promote, register

    training = mlflow_registry(work / "mlflow_transient", bundles["a"])
    version_a, version_b = bundle_version(bundles["a"]), bundle_version(bundles["b"])
    registered_b = str(register(bundles["b"], training).version)
    env = {
        "KINDLE_MLFLOW_TRACKING_URI": training.tracking_uri(),
        "KINDLE_MODEL_NAME": training.model_name,
        "KINDLE_RELOAD_INTERVAL_S": str(RELOAD_INTERVAL_S),
    }
    with running({"mlflow": ("http", env)}, SOURCE_SERVICE, source_home(work), work) as started:
        server = started["mlflow"]
        assert served_version(server) == version_a
        assert metric_sum(scrape(server), "kindle_model_behind") == 0
        with files_gone(training.output_dir, version_b):
            promote(registered_b, training)
            wait_until(lambda: reloads(server, "unfetched") >= 3, "three failed fetches of B", server)
            assert served_version(server) == version_a
            assert metric_sum(scrape(server), "kindle_model_behind") == 1
            time.sleep(2.0)  # the outage goes on: tries get further apart
        wait_until(lambda: served_version(server) == version_b, "bundle B served", server)
        metrics = scrape(server)
        tries = reload_events(server, "unfetched")
    assert metric_sum(metrics, "kindle_model_behind") == 0
    assert reloads_in(metrics, "loaded") == 1 and reloads_in(metrics, "failed") == 0
    assert reloads_in(metrics, "unfetched") == len(tries) >= 3, tries
    delays = [entry["retry_in_s"] for entry in tries]
    assert delays == [round(RELOAD_INTERVAL_S * 2**i, 3) for i in range(len(delays))], delays
    assert all(entry["served"] == version_a and entry["reason"] for entry in tries), tries


def test_a_worker_that_could_not_fetch_its_first_champion_loads_it_once_it_can(
    work: Path, bundles: dict[str, Path]
) -> None:
    """In this process: the champion's files are gone when the worker starts, so it loads
    nothing; its reloader tries the unchanged alias again (with backoff) and loads A once the
    files are back, instead of waiting for the alias to move."""
    import prometheus_client

    from services.champion import ModelState, Reloader, load

    training = mlflow_registry(work / "mlflow_start", bundles["a"])
    settings = ServiceSettings(
        mlflow_tracking_uri=training.tracking_uri(),
        model_name=training.model_name,
        reload_interval_s=RELOAD_INTERVAL_S,
    )
    state = ModelState()
    swapped: list[str] = []
    reloader = Reloader(settings, on_swap=lambda bundle: swapped.append(bundle.version), state=state)

    def unfetched() -> float:
        return (
            prometheus_client.REGISTRY.get_sample_value("kindle_model_reloads_total", {"result": "unfetched"})
            or 0
        )

    try:
        with files_gone(training.output_dir, bundle_version(bundles["a"])):
            reloader.remember_current()
            assert load(settings, state).bundle is None and state.error
            reloader.start()
            assert eventually(lambda: unfetched() >= 2) and not state.ready
        assert eventually(lambda: state.ready), state.error
    finally:
        reloader.stop()
    assert swapped == [bundle_version(bundles["a"])], state.error
    assert prometheus_client.REGISTRY.get_sample_value("kindle_model_behind") == 0


def test_after_a_reload_live_drift_compares_with_the_new_champions_reference(
    servers: dict[str, Server], bundles: dict[str, Path], sample: pd.DataFrame
) -> None:
    """Runs after the swap to B: the worker's persisted drift window is tied to B's reference."""
    from libs.models.bundle import load_bundle

    server = servers["reload"]
    assert served_version(server) == bundle_version(bundles["b"])
    expected = load_bundle(bundles["b"]).drift_reference.fingerprint
    for start in range(0, 120, 20):
        predict(server, sample.iloc[3000 + start : 3020 + start])
    state = server.state_dir / "drift"

    def fingerprints() -> set[str]:
        return {json.loads(p.read_text()).get("fingerprint") for p in state.glob("*.json")}

    wait_until(lambda: expected in fingerprints(), "a drift window on B's reference", server)


def test_a_hanging_drift_webhook_leaves_predictions_fast_and_is_counted(
    servers: dict[str, Server], sample: pd.DataFrame, hanging: HangingEndpoint
) -> None:
    """Upper-cased reviews drift on caps_ratio; the alert's webhook never answers."""
    server = servers["webhook"]
    shouting = sample.iloc[:400].copy()
    shouting["reviewText"] = shouting["reviewText"].str.upper()
    latencies = []
    for start in range(0, len(shouting), 10):
        began = time.perf_counter()
        reply = predict(server, shouting.iloc[start : start + 10])
        latencies.append(time.perf_counter() - began)
        assert len(reply["labels"]) == len(shouting.iloc[start : start + 10])
    wait_until(
        lambda: metric_sum(scrape(server), "kindle_drift_webhook_failures_total") >= 1,
        "a counted webhook failure",
        server,
    )
    metrics = scrape(server)
    assert metric_sum(metrics, "kindle_drift_alerts_total", feature="caps_ratio") >= 1
    assert hanging.accepted, "the webhook was never attempted"
    # A request waiting on the webhook would take its 2 s timeout at least.
    assert max(latencies) < 2.0 and float(np.median(latencies)) < 0.5, latencies
    assert metric_sum(metrics, "kindle_errors_total") == 0


def test_a_stopped_server_writes_the_batch_it_holds(
    work: Path, bundles: dict[str, Path], probe: pd.DataFrame
) -> None:
    """SIGTERM, over HTTP and over gRPC: the production rows the drift feed holds (fewer
    than a file's worth) are written before the workers exit. BentoML's gRPC workers run
    no shutdown hook on SIGTERM by themselves; the service makes them."""
    env = {"KINDLE_BUNDLE_PATH": str(bundles["a"]), "KINDLE_RELOAD_INTERVAL_S": "0"}
    specs = {f"stop_{protocol}": (protocol, env) for protocol in ("http", "grpc")}
    texts, summaries = texts_and_summaries(probe)
    with running(specs, SOURCE_SERVICE, source_home(work), work) as started:
        for server in started.values():
            body = {"texts": texts, "summaries": summaries}
            if server.protocol == "http":
                assert http_call(server, "predict", body).status_code == 200
            else:
                assert grpc_call(server, "predict", body)[0] == grpc.StatusCode.OK
            server.stop()
            batches = server.state_dir / "batches"
            rows = sum(len(pd.read_parquet(path)) for path in batches.glob("batch-*.parquet"))
            assert rows == len(probe), (server.protocol, rows, server.tail())
