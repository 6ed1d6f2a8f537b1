"""End to end on real servers: a Bento built from a freshly trained bundle, served by
`bentoml serve` and `bentoml serve-grpc` on loopback ports, called with real clients.

Servers start once per module (in parallel) and are always terminated. Each server
gets its own BENTOML_HOME whose `bentos` and `models` link to the one the Bento was
built in: BentoML empties `$BENTOML_HOME/prometheus_multiproc_dir` when a server starts,
so servers sharing a home would wipe each other's metrics.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pytest
import requests
from google.protobuf import json_format, struct_pb2

from services.packaging import REPO_ROOT, build_bento
from tests import fixtures

pytest.importorskip("libs.models.bundle", reason="libs/models (the bundle format) is not in this checkout")

API_KEY = "test-key-123"
START_TIMEOUT_S = 90.0


# --------------------------------------------------------------------------- data, bundle, Bento


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kindle_service")


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    frame = fixtures.kindle_sample()
    frame = frame[frame["reviewText"].notna()].reset_index(drop=True)
    return frame


@pytest.fixture(scope="module")
def probe(sample: pd.DataFrame) -> pd.DataFrame:
    """Real reviews the servers are asked about: some without a summary, one long one."""
    rows = sample.sample(n=40, random_state=7).reset_index(drop=True)
    rows.loc[:4, "summary"] = None
    return rows


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


@pytest.fixture(scope="module")
def bundle_dir(work: Path, sample: pd.DataFrame) -> Path:
    return train_small_bundle(sample.head(2500), work / "bundle")


@pytest.fixture(scope="module")
def bento(work: Path, bundle_dir: Path) -> tuple[str, Path]:
    home = work / "bentoml_home"
    home.mkdir()
    tag = build_bento(bundle_dir, env={"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"})
    assert re.fullmatch(r"kindle_sentiment:\w+", tag), tag
    return tag, home


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One `bentoml serve[-grpc]` process group, its ports and its log."""

    def __init__(self, name: str, protocol: str, tag: str, build_home: Path, work: Path, env: dict) -> None:
        self.name, self.protocol = name, protocol
        self.port, self.metrics_port = free_port(), free_port()
        home = work / f"home_{name}"
        home.mkdir()
        for store in ("bentos", "models"):
            (home / store).symlink_to(build_home / store)
        self.log_path = work / f"{name}.log"
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
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
                **env,
            }
        )
        command = "serve" if protocol == "http" else "serve-grpc"
        self.log = self.log_path.open("w")
        command_line = [sys.executable, "-m", "bentoml", command, tag, "--host", "127.0.0.1"]
        self.process = subprocess.Popen(
            [*command_line, "--port", str(self.port), "--api-workers", "1"],
            env=child_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends the workers too
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"{self.url}/metrics" if self.protocol == "http" else f"http://127.0.0.1:{self.metrics_port}/"

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
        if self.protocol == "http":
            path = "/readyz" if need_ready else "/livez"
            return requests.get(self.url + path, timeout=2).status_code == 200
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="bentoml.grpc.v1.BentoService"), timeout=2
            )
        return reply.status == health_pb2.HealthCheckResponse.SERVING or not need_ready

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


@pytest.fixture(scope="module")
def servers(bento: tuple[str, Path], work: Path, bundle_dir: Path) -> Iterator[dict[str, Server]]:
    tag, home = bento
    corrupt = work / "corrupt_bundle"
    shutil.copytree(bundle_dir, corrupt)
    for path in sorted(p for p in corrupt.rglob("*") if p.is_file()):
        path.write_bytes(b"\x00 not a bundle \xff")
    guarded = {"KINDLE_API_KEY": API_KEY, "KINDLE_RATE_LIMIT_PER_S": "1", "KINDLE_RATE_LIMIT_BURST": "8"}
    specs = {
        "http": ("http", {}),
        "grpc": ("grpc", {}),
        "http_guarded": ("http", guarded),
        "grpc_guarded": ("grpc", guarded),
        "http_corrupt": ("http", {"KINDLE_BUNDLE_PATH": str(corrupt)}),
        "grpc_corrupt": ("grpc", {"KINDLE_BUNDLE_PATH": str(corrupt)}),
    }
    started: dict[str, Server] = {}
    try:
        for name, (protocol, env) in specs.items():
            started[name] = Server(name, protocol, tag, home, work, env)
        with ThreadPoolExecutor(len(started)) as pool:
            list(pool.map(lambda s: s.wait_up(need_ready="corrupt" not in s.name), started.values()))
        yield started
    finally:
        for server in started.values():
            server.stop()


# --------------------------------------------------------------------------- clients


def http_call(server: Server, api: str, body: Any = None, raw: bytes | None = None, key: str | None = None):
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["x-api-key"] = key
    data = raw if raw is not None else json.dumps(body).encode()
    return requests.post(f"{server.url}/{api}", data=data, headers=headers, timeout=30)


def grpc_call(
    server: Server, api: str, body: Any = None, raw: bytes | None = None, key: str | None = None
) -> tuple[grpc.StatusCode, Any]:
    """(status code, decoded JSON or error details) of one BentoService/Call."""
    from bentoml.grpc.v1 import service_pb2 as pb
    from bentoml.grpc.v1 import service_pb2_grpc as services

    if raw is not None:
        request = pb.Request(api_name=api, serialized_bytes=raw)
    else:
        value = struct_pb2.Value()
        json_format.ParseDict(body, value)
        request = pb.Request(api_name=api, json=value)
    metadata = (("x-api-key", key),) if key is not None else ()
    with grpc.insecure_channel(
        f"127.0.0.1:{server.port}", options=[("grpc.max_send_message_length", 64 * 2**20)]
    ) as channel:
        try:
            reply = services.BentoServiceStub(channel).Call(request, metadata=metadata, timeout=30)
        except grpc.RpcError as error:
            return error.code(), error.details()
    return grpc.StatusCode.OK, json_format.MessageToDict(reply.json)


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


# --------------------------------------------------------------------------- tests


def test_http_grpc_and_offline_agree(
    servers: dict[str, Server], probe: pd.DataFrame, bundle_dir: Path
) -> None:
    texts, summaries = texts_and_summaries(probe)
    expected = offline(bundle_dir, texts, summaries)
    body = {"texts": texts, "summaries": summaries}

    reply = http_call(servers["http"], "predict", body)
    assert reply.status_code == 200, reply.text
    over_http = reply.json()
    code, over_grpc = grpc_call(servers["grpc"], "predict", body)
    assert code == grpc.StatusCode.OK, over_grpc

    expected_labels = (expected.argmax(axis=1) + 1).tolist()
    for result in (over_http, over_grpc):
        assert [int(label) for label in result["labels"]] == expected_labels
        assert np.abs(np.asarray(result["probabilities"]) - expected).max() <= 1e-9
        assert result["sentiment"] == [
            "negative" if label <= 2 else "neutral" if label == 3 else "positive" for label in expected_labels
        ]
        assert result["model_version"] == over_http["model_version"]
    assert len(set(expected_labels)) > 1  # a real model, not a constant


def test_predict_batch_takes_dataset_records(
    servers: dict[str, Server], probe: pd.DataFrame, bundle_dir: Path
) -> None:
    texts, summaries = texts_and_summaries(probe)
    records = [
        {"reviewText": text, "summary": summary, "overall": int(overall), "asin": "B00X"}
        for text, summary, overall in zip(texts, summaries, probe["overall"], strict=True)
    ]
    expected = offline(bundle_dir, texts, summaries)
    reply = http_call(servers["http"], "predict_batch", records)
    assert reply.status_code == 200, reply.text
    code, over_grpc = grpc_call(servers["grpc"], "predict_batch", records)
    assert code == grpc.StatusCode.OK, over_grpc
    for result in (reply.json(), over_grpc):
        assert np.abs(np.asarray(result["probabilities"]) - expected).max() <= 1e-9


def test_metadata_and_explain(servers: dict[str, Server], probe: pd.DataFrame) -> None:
    from libs.features import CONTRACT

    reply = http_call(servers["http"], "metadata", raw=b"")
    assert reply.status_code == 200, reply.text
    meta = reply.json()
    assert meta["ready"] is True and meta["feature_contract"]["hash"] == CONTRACT.hash
    assert meta["model"]["version"] and meta["drift_reference"]["rows"] > 0
    code, over_grpc = grpc_call(servers["grpc"], "metadata", {})
    assert code == grpc.StatusCode.OK and over_grpc["feature_contract"]["hash"] == CONTRACT.hash

    texts, _ = texts_and_summaries(probe.head(3))
    reply = http_call(servers["http"], "explain", {"texts": texts, "top_k": 5})
    assert reply.status_code == 200, reply.text
    explanations = reply.json()["explanations"]
    assert len(explanations) == 3 and all(len(e["tokens"]) <= 5 for e in explanations)
    assert any(e["tokens"] for e in explanations)
    code, over_grpc = grpc_call(servers["grpc"], "explain", {"texts": texts, "top_k": 5})
    assert code == grpc.StatusCode.OK and over_grpc["explanations"] == explanations


BAD_INPUTS = [
    ("empty_list", "predict", {"texts": []}, None, "is empty"),
    ("too_many", "predict", {"texts": ["fine"] * 1001}, None, "at most 1000"),
    ("too_long", "predict", {"texts": ["x" * 20_001]}, None, "at most 20000"),
    ("wrong_item_type", "predict", {"texts": ["ok", 3]}, None, "texts[1]"),
    ("wrong_container_type", "predict", {"texts": "just a string"}, None, "expected a list"),
    ("missing_field", "predict", {"summaries": ["a"]}, None, "missing field 'texts'"),
    ("missing_record_field", "predict_batch", [{"summary": "no text"}], None, "reviewText"),
    ("records_not_list", "predict_batch", {"reviewText": "x"}, None, "list of review records"),
    ("invalid_json", "predict", None, b'{"texts": ["unterminated', "not valid JSON"),
    ("invalid_utf8", "predict", None, b'{"texts": ["caf\xe9 \xff"]}', "UTF-8"),
    ("empty_body", "predict", None, b"", "empty"),
]


@pytest.mark.parametrize(
    ("case", "api", "body", "raw", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_is_a_client_error_on_both_protocols(
    servers: dict[str, Server], case: str, api: str, body: Any, raw: bytes | None, message: str
) -> None:
    reply = http_call(servers["http"], api, body, raw=raw)
    assert reply.status_code == 400, (case, reply.status_code, reply.text)
    assert message in reply.text
    if raw == b"":  # a gRPC request cannot carry an absent body differently from `{}`
        raw = b" "
    code, details = grpc_call(servers["grpc"], api, body, raw=raw)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (case, code, details)
    assert message in details


def test_unknown_grpc_api_and_oversized_http_body(servers: dict[str, Server]) -> None:
    code, details = grpc_call(servers["grpc"], "no_such_api", {"texts": ["x"]})
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown api_name" in details
    reply = requests.post(
        f"{servers['http'].url}/predict", data=b"{", headers={"content-length": str(2**40)}, timeout=10
    )
    assert reply.status_code in (400, 413)


def test_servers_survive_abuse(servers: dict[str, Server]) -> None:
    for name in ("http", "grpc"):
        values = scrape(servers[name])
        assert metric_sum(values, "kindle_requests_total", status="500") == 0
        assert metric_sum(values, "kindle_requests_total", status="INTERNAL") == 0
        assert metric_sum(values, "kindle_requests_total", status="UNKNOWN") == 0
        assert servers[name].process.poll() is None
    assert requests.get(servers["http"].url + "/readyz", timeout=5).status_code == 200


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_api_key_and_rate_limit(servers: dict[str, Server], protocol: str) -> None:
    server = servers[f"{protocol}_guarded"]
    body = {"texts": ["A lovely story, I read it twice."]}

    def call(key: str | None) -> str:
        if protocol == "http":
            return str(http_call(server, "predict", body, key=key).status_code)
        return grpc_call(server, "predict", body, key=key)[0].name

    unauthenticated = "401" if protocol == "http" else "UNAUTHENTICATED"
    assert call(None) == unauthenticated
    assert call("wrong-key") == unauthenticated
    assert call(API_KEY) in ("200", "OK")
    outcomes = [call(API_KEY) for _ in range(20)]  # burst 8, refill 1/s
    limited = "429" if protocol == "http" else "RESOURCE_EXHAUSTED"
    assert limited in outcomes and outcomes[0] in ("200", "OK"), outcomes


def test_metrics_and_drift_gauges_move(servers: dict[str, Server], sample: pd.DataFrame) -> None:
    rows = sample.sample(n=300, random_state=11)
    texts, summaries = texts_and_summaries(rows)
    for name in ("http", "grpc"):
        server = servers[name]
        before = scrape(server)
        for start in range(0, 300, 100):
            body = {"texts": texts[start : start + 100], "summaries": summaries[start : start + 100]}
            if name == "http":
                assert http_call(server, "predict", body).status_code == 200
            else:
                assert grpc_call(server, "predict", body)[0] == grpc.StatusCode.OK
        deadline, after = time.monotonic() + 20, before
        while time.monotonic() < deadline:
            after = scrape(server)
            if metric_sum(after, "kindle_drift_window_rows") >= 300 and any(
                k.startswith("kindle_drift_psi{") for k in after
            ):
                break
            time.sleep(0.5)
        ok = {"status": "200"} if name == "http" else {"status": "OK"}
        protocol_label = {"protocol": name}
        assert (
            metric_sum(after, "kindle_requests_total", api="predict", **protocol_label, **ok)
            >= metric_sum(before, "kindle_requests_total", api="predict", **protocol_label, **ok) + 3
        )
        assert (
            metric_sum(after, "kindle_predictions_total")
            >= metric_sum(before, "kindle_predictions_total") + 300
        )
        assert metric_sum(after, "kindle_prediction_confidence_count") >= 300
        assert metric_sum(after, "kindle_batch_size_count") > metric_sum(before, "kindle_batch_size_count")
        assert metric_sum(after, "kindle_request_duration_seconds_count", api="predict", **protocol_label) > 0
        assert metric_sum(after, "kindle_errors_total", protocol=name) > 0  # from the bad-input tests
        assert metric_sum(after, "kindle_drift_window_rows") >= 300, server.tail()
        psi = {k: v for k, v in after.items() if k.startswith("kindle_drift_psi{")}
        assert len(psi) >= 6 and all(math.isfinite(v) for v in psi.values()), psi
        assert "kindle_drift_max_psi" in "".join(after) and "kindle_drift_state" in "".join(after)
        assert list((server.state_dir / "drift").glob("worker-*.json")), "drift window not persisted"


def test_corrupt_bundle_keeps_server_up_but_not_ready(servers: dict[str, Server]) -> None:
    server = servers["http_corrupt"]
    assert requests.get(server.url + "/livez", timeout=5).status_code == 200
    ready = requests.get(server.url + "/readyz", timeout=5)
    assert ready.status_code == 503
    assert ready.json()["ready"] is False and ready.json()["reason"]
    reply = http_call(server, "predict", {"texts": ["fine"]})
    assert reply.status_code == 503 and "model not loaded" in reply.json()["error"]
    meta = http_call(server, "metadata", raw=b"").json()
    assert meta["ready"] is False and meta["not_ready_reason"] == ready.json()["reason"]
    assert server.process.poll() is None


def test_corrupt_bundle_grpc_health_not_serving(servers: dict[str, Server]) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server = servers["grpc_corrupt"]
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        reply, call = health_pb2_grpc.HealthStub(channel).Check.with_call(
            health_pb2.HealthCheckRequest(service="bentoml.grpc.v1.BentoService"), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert dict(call.trailing_metadata())["x-not-ready-reason"]
    code, details = grpc_call(server, "predict", {"texts": ["fine"]})
    assert code == grpc.StatusCode.UNAVAILABLE and "model not loaded" in details
