"""End to end on real servers: a Bento built from a freshly trained bundle, served by
`bentoml serve` and `bentoml serve-grpc` on loopback ports, called with real clients.

Servers start once per module (in parallel) and are always terminated.
"""

from __future__ import annotations

import math
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pytest
import requests

from tests.fixtures.service import (
    Server,
    build_test_bento,
    grpc_call,
    grpc_exchange,
    http_call,
    metric_sum,
    offline,
    running,
    scrape,
    texts_and_summaries,
)

API_KEY = "test-key-123"
FEEDBACK_KEY = "feedback-key-456"  # the client "tester"'s, on the plain servers
PARTNER_KEY = "feedback-key-789"  # the client "partner"'s, on the guarded servers


# --------------------------------------------------------------------------- data, bundle, Bento


@pytest.fixture(scope="module")
def probe(sample: pd.DataFrame) -> pd.DataFrame:
    """Real reviews the servers are asked about: some without a summary, one long one."""
    rows = sample.sample(n=40, random_state=7).reset_index(drop=True)
    rows.loc[:4, "summary"] = None
    return rows


@pytest.fixture(scope="module")
def built(work: Path, sample: pd.DataFrame) -> tuple[str, Path, Path]:
    tag, home, bundle_dir = build_test_bento(work, sample.head(2500))
    assert re.fullmatch(r"kindle_sentiment:\w+", tag), tag
    return tag, home, bundle_dir


@pytest.fixture(scope="module")
def bundle_dir(built: tuple[str, Path, Path]) -> Path:
    return built[2]


@pytest.fixture(scope="module")
def bento(built: tuple[str, Path, Path]) -> tuple[str, Path]:
    return built[0], built[1]


# --------------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def servers(bento: tuple[str, Path], work: Path, bundle_dir: Path) -> Iterator[dict[str, Server]]:
    tag, home = bento
    corrupt = work / "corrupt_bundle"
    shutil.copytree(bundle_dir, corrupt)
    for path in sorted(p for p in corrupt.rglob("*") if p.is_file()):
        path.write_bytes(b"\x00 not a bundle \xff")
    guarded = {
        "KINDLE_API_KEY": API_KEY,
        "KINDLE_FEEDBACK_KEYS": f"partner={PARTNER_KEY}",
        "KINDLE_RATE_LIMIT_PER_S": "1",
        "KINDLE_RATE_LIMIT_BURST": "8",
    }
    # Buckets of 10 reviews that hardly refill; no feedback key (feedback is off).
    counted = {"KINDLE_RATE_LIMIT_PER_S": "0.001", "KINDLE_RATE_LIMIT_BURST": "10"}
    proxied = {**counted, "KINDLE_TRUSTED_PROXIES": "127.0.0.1"}
    feedback = {"KINDLE_FEEDBACK_KEYS": f"tester={FEEDBACK_KEY}"}
    specs = {
        "http": ("http", feedback),
        "grpc": ("grpc", {**feedback, "KINDLE_MAX_BATCH_SIZE": "8"}),  # explain's parts are visible
        "http_guarded": ("http", guarded),
        "grpc_guarded": ("grpc", guarded),
        "http_counted": ("http", counted),
        "grpc_counted": ("grpc", counted),
        "http_proxied": ("http", proxied),
        "grpc_proxied": ("grpc", proxied),
        "http_corrupt": ("http", {"KINDLE_BUNDLE_PATH": str(corrupt)}),
        "grpc_corrupt": ("grpc", {"KINDLE_BUNDLE_PATH": str(corrupt)}),
        # Scored batches do not depend on drift monitoring; small files so they show at once.
        "http_no_drift": ("http", {"KINDLE_DRIFT_ENABLED": "false", "KINDLE_BATCH_ROWS_PER_FILE": "10"}),
    }
    with running(specs, tag, home, work, unready={"http_corrupt", "grpc_corrupt"}) as servers:
        yield servers


# --------------------------------------------------------------------------- clients


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


def test_feedback_is_stored_over_both_protocols_with_the_serving_version(
    servers: dict[str, Server], probe: pd.DataFrame
) -> None:
    from libs.production import read_feedback

    texts, summaries = texts_and_summaries(probe.head(4))
    ratings = [int(star) for star in probe["overall"].head(4)]
    body = {
        "texts": texts[:2],
        "summaries": summaries[:2],
        "ratings": ratings[:2],
        "request_ids": ["r-1", None],
    }
    reply = http_call(servers["http"], "feedback", body, key=FEEDBACK_KEY)
    assert reply.status_code == 200, reply.text
    code, over_grpc = grpc_call(
        servers["grpc"], "feedback", {"texts": texts[2:], "ratings": ratings[2:]}, key=FEEDBACK_KEY
    )
    assert code == grpc.StatusCode.OK, over_grpc
    version = reply.json()["model_version"]
    assert reply.json()["accepted"] == 2 and over_grpc == {"accepted": 2.0, "model_version": version}
    for name, rows in (("http", slice(0, 2)), ("grpc", slice(2, 4))):
        stored = read_feedback(servers[name].state_dir / "feedback")  # on disk before the answer
        assert stored["reviewText"].tolist() == texts[rows] and stored["overall"].tolist() == ratings[rows]
        assert set(stored["model_version"]) == {version}
        assert set(stored["client"]) == {"tester"}  # the name its feedback key is configured under
    assert read_feedback(servers["http"].state_dir / "feedback")["request_id"].tolist() == ["r-1", None]


BAD_INPUTS = [
    ("empty_list", "predict", {"texts": []}, None, "is empty"),
    ("feedback_rating", "feedback", {"texts": ["ok"], "ratings": [7]}, None, "ratings[0] is 7"),
    ("feedback_no_rating", "feedback", {"texts": ["ok"]}, None, "missing field 'ratings'"),
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
    # Stored text must be UTF-8: a lone surrogate would fail the Parquet write (a 500).
    ("feedback_surrogate", "feedback", None, b'{"texts": ["ok \\ud800"], "ratings": [5]}', "texts[0] is not"),
]


@pytest.mark.parametrize(
    ("case", "api", "body", "raw", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_is_a_client_error_on_both_protocols(
    servers: dict[str, Server], case: str, api: str, body: Any, raw: bytes | None, message: str
) -> None:
    key = FEEDBACK_KEY if api == "feedback" else None
    reply = http_call(servers["http"], api, body, raw=raw, key=key)
    assert reply.status_code == 400, (case, reply.status_code, reply.text)
    assert message in reply.text
    if raw == b"":  # a gRPC request cannot carry an absent body differently from `{}`
        raw = b" "
    code, details = grpc_call(servers["grpc"], api, body, raw=raw, key=key)
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


def call_api(
    server: Server, api: str, body: Any, key: str | None = None, forwarded_for: str | None = None
) -> tuple[str, str, dict[str, str]]:
    """(status, refusal message, HTTP headers) of one call over the server's protocol."""
    if server.protocol == "http":
        headers = {"x-forwarded-for": forwarded_for} if forwarded_for else {}
        reply = http_call(server, api, body, key=key, headers=headers)
        message = reply.json().get("error", "") if reply.status_code != 200 else ""
        return str(reply.status_code), message, dict(reply.headers)
    metadata = tuple(m for m in (("x-api-key", key), ("x-forwarded-for", forwarded_for)) if m[1])
    code, payload, _ = grpc_exchange(server, api, body, metadata=metadata)
    return code.name, payload if code != grpc.StatusCode.OK else "", {}


OK = ("200", "OK")
UNAUTHENTICATED = ("401", "UNAUTHENTICATED")
LIMITED = ("429", "RESOURCE_EXHAUSTED")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_feedback_opens_with_its_own_key_and_records_the_client(
    servers: dict[str, Server], protocol: str
) -> None:
    from libs.production import read_feedback

    server = servers[f"{protocol}_guarded"]
    rating = {"texts": ["Could not put it down."], "ratings": [5]}
    status, message, _ = call_api(server, "feedback", rating, key=API_KEY)
    assert status in UNAUTHENTICATED and "feedback key" in message  # the API key does not open it
    assert call_api(server, "feedback", rating)[0] in UNAUTHENTICATED
    assert call_api(server, "predict", {"texts": ["Fine."]}, key=PARTNER_KEY)[0] in UNAUTHENTICATED
    status, message, _ = call_api(server, "feedback", rating, key=PARTNER_KEY)
    assert status in OK, message
    stored = read_feedback(server.state_dir / "feedback")
    assert stored["client"].tolist() == ["partner"] and stored["overall"].tolist() == [5]

    off = servers[f"{protocol}_counted"]  # no feedback key configured: off, whatever is sent
    for key in (None, API_KEY, PARTNER_KEY):
        status, message, _ = call_api(off, "feedback", rating, key=key)
        assert status in ("403", "PERMISSION_DENIED") and "KINDLE_FEEDBACK_KEYS" in message, message
    assert not (off.state_dir / "feedback").exists() or read_feedback(off.state_dir / "feedback").empty


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_request_pays_a_token_per_review_and_forwarded_for_needs_a_trusted_proxy(
    servers: dict[str, Server], protocol: str
) -> None:
    """Buckets of 10 reviews: a request of 10 empties one. The untrusting server ignores
    X-Forwarded-For (one bucket: 127.0.0.1); the one trusting 127.0.0.1 counts per address."""
    ten, one, four = ({"texts": ["A fine read."] * n} for n in (10, 1, 4))
    counted = servers[f"{protocol}_counted"]
    assert call_api(counted, "predict", ten, forwarded_for="198.51.100.1")[0] in OK
    status, message, headers = call_api(counted, "predict", one, forwarded_for="198.51.100.2")
    assert status in LIMITED and "127.0.0.1" in message, message
    if protocol == "http":
        assert int(headers["retry-after"]) >= 1

    proxied = servers[f"{protocol}_proxied"]
    assert call_api(proxied, "predict", ten, forwarded_for="198.51.100.1")[0] in OK
    assert call_api(proxied, "predict", four, forwarded_for="198.51.100.2")[0] in OK  # another bucket
    status, message, _ = call_api(proxied, "predict", one, forwarded_for="198.51.100.1")
    assert status in LIMITED and "198.51.100.1" in message, message
    # 6 left: the first review passes admission, the other 9 are refused once counted.
    status, message, headers = call_api(proxied, "explain", ten, forwarded_for="198.51.100.2")
    assert status in LIMITED and "198.51.100.2" in message and "need 9 more tokens" in message, message
    if protocol == "http":
        assert int(headers["retry-after"]) >= 1
    values = scrape(proxied)
    assert metric_sum(values, "kindle_errors_total", api="explain", type="rate_limited") == 1


def test_metrics_and_drift_gauges_move(servers: dict[str, Server], sample: pd.DataFrame) -> None:
    """Scored reviews move the request, drift and estimated-performance gauges; accepted
    feedback moves the realised ones (over the window, all workers together)."""
    rows = sample.sample(n=300, random_state=11)
    texts, summaries = texts_and_summaries(rows)
    labelled = {
        "texts": texts[:20],
        "summaries": summaries[:20],
        "ratings": rows["overall"].head(20).tolist(),
    }
    for name in ("http", "grpc"):
        server = servers[name]
        before = scrape(server)
        if name == "http":
            assert http_call(server, "feedback", labelled, key=FEEDBACK_KEY).status_code == 200
        else:
            assert grpc_call(server, "feedback", labelled, key=FEEDBACK_KEY)[0] == grpc.StatusCode.OK
        for start in range(0, 300, 100):
            body = {"texts": texts[start : start + 100], "summaries": summaries[start : start + 100]}
            if name == "http":
                assert http_call(server, "predict", body).status_code == 200
            else:
                assert grpc_call(server, "predict", body)[0] == grpc.StatusCode.OK
        deadline, after = time.monotonic() + 20, before
        while time.monotonic() < deadline:
            after = scrape(server)
            if (
                metric_sum(after, "kindle_drift_window_rows") >= 300
                and any(k.startswith("kindle_drift_psi{") for k in after)
                and metric_sum(after, "kindle_performance_feedback_rows") >= 20
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
        for metric in ("accuracy", "macro_f1", "mae_stars"):
            estimated = metric_sum(after, "kindle_performance_estimated", metric=metric)
            realised = metric_sum(after, "kindle_performance_realised", metric=metric)
            assert math.isfinite(estimated) and math.isfinite(realised), (metric, estimated, realised)
        assert 0 < metric_sum(after, "kindle_performance_estimated", metric="accuracy") < 1
        assert metric_sum(after, "kindle_performance_feedback_rows") >= 20, server.tail()
        assert metric_sum(after, "kindle_performance_max_drop") == 0.05


def test_batches_are_written_with_drift_monitoring_off(
    servers: dict[str, Server], probe: pd.DataFrame
) -> None:
    from libs.production import LABEL_COLUMN, VERSION_COLUMN, read_batches

    server = servers["http_no_drift"]
    texts, summaries = texts_and_summaries(probe)
    reply = http_call(server, "predict", {"texts": texts, "summaries": summaries})
    assert reply.status_code == 200
    folder = server.state_dir / "batches"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(list(folder.glob("batch-*.parquet"))) < len(texts) // 10:
        time.sleep(0.2)
    batches = read_batches(folder)
    assert len(batches) == len(texts), server.tail()
    assert batches[LABEL_COLUMN].tolist() == [str(label) for label in reply.json()["labels"]]
    assert set(batches[VERSION_COLUMN]) == {reply.json()["model_version"]}
    metrics = scrape(server)
    assert metric_sum(metrics, "kindle_drift_window_rows") == 0  # drift really is off
    dropped = {k: v for k, v in metrics.items() if k.startswith("kindle_batch_dropped_rows_total")}
    assert dropped == {
        f'kindle_batch_dropped_rows_total{{reason="{r}"}}': 0.0 for r in ("queue_full", "disk", "error")
    }


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


def test_explain_runs_in_model_calls_of_at_most_max_batch_size(
    servers: dict[str, Server], probe: pd.DataFrame
) -> None:
    """20 reviews to explain on a server whose largest model call is 8 reviews: three calls of
    at most 8, as predict's, not one of 20 holding the model."""
    server = servers["grpc"]
    texts, _ = texts_and_summaries(probe.head(20))
    before = scrape(server)
    code, reply = grpc_call(server, "explain", {"texts": texts, "top_k": 3})
    assert code == grpc.StatusCode.OK and len(reply["explanations"]) == 20, reply
    after = scrape(server)

    def grew(name: str, **labels: str) -> float:
        return metric_sum(after, name, **labels) - metric_sum(before, name, **labels)

    assert grew("kindle_batch_size_count") == 3
    assert grew("kindle_batch_size_bucket", le="8.0") == 3
