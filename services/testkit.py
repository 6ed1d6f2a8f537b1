"""Shared by every test and benchmark that needs a real champion or a real server: a small
logistic-regression bundle trained on real reviews, `bentoml serve[-grpc]` processes on
loopback ports, and plain HTTP/gRPC clients for the service's APIs.

Each server gets its own BENTOML_HOME whose `bentos` and `models` link to the one the Bento
was built in: BentoML empties `$BENTOML_HOME/prometheus_multiproc_dir` when a server
starts, so servers sharing a home would wipe each other's metrics.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import requests
from google.protobuf import json_format, struct_pb2

from services.packaging import REPO_ROOT

START_TIMEOUT_S = 180.0  # six servers starting at once on a busy 2-core machine


def train_small_bundle(reviews: pd.DataFrame, path: Path) -> Path:
    """A real logistic-regression champion on real reviews, with its drift reference, saved
    with libs/models' own bundle code (what the training workflow produces, minus HPO)."""
    from libs.drift import ReferenceProfile
    from libs.features import CLEAN_COLUMN, CONTRACT, Tfidf
    from libs.models.bundle import ModelBundle, library_versions, new_version, save_bundle
    from libs.models.data import fingerprint, labelled_features, labels_of
    from libs.models.estimators import build_estimator

    frame = labelled_features(reviews)
    tfidf = Tfidf.fit(frame[CLEAN_COLUMN].tolist())
    estimator = build_estimator("logreg", {"C": 2.0}, tfidf)
    estimator.fit(frame, labels_of(frame))
    predicted = estimator.predict(frame)
    reference = ReferenceProfile.build(frame, predicted_labels=predicted.tolist())
    bundle = ModelBundle(
        kind="logreg",
        version=new_version(fingerprint(frame), "logreg"),
        labels=[1, 2, 3, 4, 5],
        estimator=estimator,
        tfidf=tfidf,
        metrics={"train_accuracy": float((predicted == labels_of(frame)).mean())},
        data_fingerprint=fingerprint(frame),
        contract_hash=CONTRACT.hash,
        library_versions=library_versions("logreg"),
        drift_reference=reference.to_dict(),
    )
    return save_bundle(bundle, path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A server process group on a loopback port, its log, readiness probing and shutdown.

    `Server` is the BentoML service; benchmarks also run other HTTP apps (the FastAPI
    baseline) through this class so that every server is started, probed and stopped alike.
    """

    protocol = "http"

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_path: Path, port: int) -> None:
        self.name, self.port, self.log_path = name, port, log_path
        self.log = log_path.open("w")
        self.process = subprocess.Popen(
            command,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends the workers too
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_up(self, need_ready: bool) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.process.returncode}:\n{self.tail()}")
            try:
                if self._probe(need_ready):
                    return
            except (requests.RequestException, grpc.RpcError):
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.name} not up after {START_TIMEOUT_S}s:\n{self.tail()}")

    def _probe(self, need_ready: bool) -> bool:
        path = "/readyz" if need_ready else "/livez"
        return requests.get(self.url + path, timeout=2).status_code == 200

    def tail(self, lines: int = 60) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.log.close()


class Server(ServerProcess):
    """One `bentoml serve[-grpc]` of a Bento, with its own BentoML home and state folders."""

    def __init__(
        self,
        name: str,
        protocol: str,
        tag: str,
        build_home: Path,
        work: Path,
        env: dict[str, str],
        api_workers: int | None = 1,
    ) -> None:
        self.protocol = protocol
        port, self.metrics_port = free_port(), free_port()
        home = work / f"home_{name}"
        home.mkdir()
        for store in ("bentos", "models"):
            (home / store).symlink_to(build_home / store)
        self.state_dir = work / f"state_{name}"
        child_env = {k: v for k, v in os.environ.items() if not k.startswith(("KINDLE_", "BENTOML_"))}
        child_env.update(
            {
                "BENTOML_HOME": str(home),
                "BENTOML_DO_NOT_TRACK": "true",
                "BENTOML_CONFIG": str(REPO_ROOT / "services" / "configuration.yaml"),
                "BENTOML_CONFIG_OPTIONS": f"api_server.grpc.metrics.port={self.metrics_port} "
                "api_server.grpc.metrics.host=127.0.0.1",
                "PROMETHEUS_MULTIPROC_DIR": str(home / "prometheus_multiproc_dir"),
                "KINDLE_DRIFT_STATE_DIR": str(self.state_dir / "drift"),
                "KINDLE_BATCH_DIR": str(self.state_dir / "batches"),
                "KINDLE_DRIFT_RECOMPUTE_ROWS": "50",
                "PYTHONPATH": python_path(),
                **env,
            }
        )
        command = "serve" if protocol == "http" else "serve-grpc"
        command_line = [sys.executable, "-m", "bentoml", command, tag, "--host", "127.0.0.1"]
        command_line += ["--port", str(port)]
        if api_workers is not None:  # None: the configuration's default (one per CPU)
            command_line += ["--api-workers", str(api_workers)]
        super().__init__(name, command_line, child_env, work / f"{name}.log", port)

    @property
    def metrics_url(self) -> str:
        return f"{self.url}/metrics" if self.protocol == "http" else f"http://127.0.0.1:{self.metrics_port}/"

    def _probe(self, need_ready: bool) -> bool:
        if self.protocol == "http":
            return super()._probe(need_ready)
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="bentoml.grpc.v1.BentoService"), timeout=2
            )
        return reply.status == health_pb2.HealthCheckResponse.SERVING or not need_ready


def python_path() -> str:
    """PYTHONPATH for a child process that must import this repository."""
    return os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))


def http_call(
    server: Server,
    api: str,
    body: Any = None,
    raw: bytes | None = None,
    key: str | None = None,
    headers: dict[str, str] | None = None,
):
    sent = {"content-type": "application/json", **(headers or {})}
    if key is not None:
        sent["x-api-key"] = key
    data = raw if raw is not None else json.dumps(body).encode()
    return requests.post(f"{server.url}/{api}", data=data, headers=sent, timeout=30)


def grpc_call(
    server: Server, api: str, body: Any = None, raw: bytes | None = None, key: str | None = None
) -> tuple[grpc.StatusCode, Any]:
    """(status code, decoded JSON or error details) of one BentoService/Call."""
    metadata = (("x-api-key", key),) if key is not None else ()
    code, payload, _ = grpc_exchange(server, api, body, raw, metadata)
    return code, payload


def grpc_exchange(
    server: Server, api: str, body: Any = None, raw: bytes | None = None, metadata: tuple = ()
) -> tuple[grpc.StatusCode, Any, dict[str, str]]:
    """(status code, decoded JSON or error details, the server's initial metadata) of one Call."""
    from bentoml.grpc.v1 import service_pb2 as pb
    from bentoml.grpc.v1 import service_pb2_grpc as services

    if raw is not None:
        request = pb.Request(api_name=api, serialized_bytes=raw)
    else:
        value = struct_pb2.Value()
        json_format.ParseDict(body, value)
        request = pb.Request(api_name=api, json=value)
    with grpc.insecure_channel(
        f"127.0.0.1:{server.port}", options=[("grpc.max_send_message_length", 64 * 2**20)]
    ) as channel:
        try:
            reply, call = services.BentoServiceStub(channel).Call.with_call(
                request, metadata=metadata, timeout=30
            )
        except grpc.RpcError as error:
            return error.code(), error.details(), dict(error.initial_metadata() or ())
    return grpc.StatusCode.OK, json_format.MessageToDict(reply.json), dict(call.initial_metadata() or ())


@contextmanager
def running(
    specs: dict[str, tuple[str, dict[str, str]]], tag: str, home: Path, work: Path
) -> Iterator[dict[str, Server]]:
    """Servers by name from {name: (protocol, env)}, started together, ready, always stopped."""
    started: dict[str, Server] = {}
    try:
        for name, (protocol, env) in specs.items():
            started[name] = Server(name, protocol, tag, home, work, env)
        with ThreadPoolExecutor(len(started)) as pool:
            list(pool.map(lambda server: server.wait_up(need_ready=True), started.values()))
        yield started
    finally:
        for server in started.values():
            server.stop()


def texts_and_summaries(rows: pd.DataFrame) -> tuple[list[str], list[str | None]]:
    summaries = [
        None if (s is None or (isinstance(s, float) and math.isnan(s))) else s for s in rows["summary"]
    ]
    return rows["reviewText"].tolist(), summaries


def offline(bundle_dir: Path, texts: list[str], summaries: list[str | None]) -> np.ndarray:
    from libs.models.bundle import load_bundle

    return np.asarray(load_bundle(bundle_dir).predict_proba(texts, summaries))


def scrape(server: Server) -> dict[str, float]:
    """Sample name with labels -> value, for the kindle_* series."""
    text = requests.get(server.metrics_url, timeout=10).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("kindle_"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def metric_sum(values: dict[str, float], prefix: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for k, v in values.items() if k.startswith(prefix) and all(w in k for w in wanted))


def build_test_bento(work: Path, reviews: pd.DataFrame) -> tuple[str, Path, Path]:
    """(Bento tag, the BENTOML_HOME it was built in, the bundle folder): a champion trained
    on `reviews`, packed into a Bento exactly as the training workflow does."""
    from services.packaging import build_bento

    bundle_dir = train_small_bundle(reviews, work / "bundle")
    home = work / "bentoml_home"
    home.mkdir()
    tag = build_bento(bundle_dir, env={"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"})
    return tag, home, bundle_dir
