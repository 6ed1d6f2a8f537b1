"""Request ids end to end on real servers: the client's `x-request-id` (HTTP header or gRPC
metadata) or a generated one is echoed back and carried by every JSON log line of the call,
from the API code and from the model (runner) path, and the service's log lines are JSON.

The servers log at DEBUG, where a successful prediction and a refused one both log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import grpc
import pandas as pd
import pytest

from tests import fixtures
from tests.fixtures.service import (
    Server,
    build_test_bento,
    grpc_exchange,
    http_call,
    running,
    texts_and_summaries,
)

GENERATED_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def reviews() -> pd.DataFrame:
    return fixtures.kindle_reviews()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, reviews: pd.DataFrame) -> Iterator[dict[str, Server]]:
    work = tmp_path_factory.mktemp("request_logs")
    tag, home, _ = build_test_bento(work, reviews.head(1500))
    debug = {"KINDLE_LOG_LEVEL": "DEBUG"}
    with running({"http": ("http", debug), "grpc": ("grpc", debug)}, tag, home, work) as started:
        yield started


def log_entries(server: Server) -> list[dict[str, Any]]:
    """Every line the server process wrote, each parsed as one JSON object."""
    return [json.loads(line) for line in server.output()]


def lines_of(server: Server, request_id: str) -> list[dict[str, Any]]:
    return [entry for entry in log_entries(server) if entry.get("request_id") == request_id]


def call(server: Server, body: Any, raw: bytes | None, request_id: str | None) -> tuple[str, str | None]:
    """(outcome, echoed request id) of one predict call over the server's protocol."""
    if server.protocol == "http":
        headers = {"x-request-id": request_id} if request_id else {}
        reply = http_call(server, "predict", body, raw=raw, headers=headers)
        return str(reply.status_code), reply.headers.get("x-request-id")
    metadata = (("x-request-id", request_id),) if request_id else ()
    code, _, trailing = grpc_exchange(server, "predict", body, raw=raw, metadata=metadata)
    return code.name, trailing.get("x-request-id")


OK = {"http": "200", "grpc": grpc.StatusCode.OK.name}
INVALID = {"http": "400", "grpc": grpc.StatusCode.INVALID_ARGUMENT.name}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_client_request_id_is_echoed_and_on_api_and_model_log_lines(
    servers: dict[str, Server], reviews: pd.DataFrame, protocol: str
) -> None:
    server = servers[protocol]
    texts, summaries = texts_and_summaries(reviews.sample(n=5, random_state=3))
    request_id = f"abc123-{protocol}"
    outcome, echoed = call(server, {"texts": texts, "summaries": summaries}, None, request_id)
    assert (outcome, echoed) == (OK[protocol], request_id)

    lines = lines_of(server, request_id)
    by_logger = {(entry["logger"], entry["msg"]) for entry in lines}
    assert ("kindle.service", "scored") in by_logger, lines  # the API code
    assert ("kindle.runtime", "model call") in by_logger, lines  # the embedded runner, scoring
    scored = next(entry for entry in lines if entry["msg"] == "scored")
    assert scored["protocol"] == protocol and scored["reviews"] == 5 and scored["level"] == "DEBUG"
    model_call = next(entry for entry in lines if entry["msg"] == "model call")
    assert model_call["rows"] >= 5 and model_call["model_ms"] >= 0


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_refused_request_logs_its_id_and_reason(servers: dict[str, Server], protocol: str) -> None:
    server = servers[protocol]
    request_id = f"abc123-bad-{protocol}"
    outcome, echoed = call(server, {"texts": ["fine", 3]}, None, request_id)
    assert (outcome, echoed) == (INVALID[protocol], request_id)
    refusals = [entry for entry in lines_of(server, request_id) if entry["msg"] == "invalid request"]
    assert refusals and refusals[0]["kind"] and refusals[0]["protocol"] == protocol, refusals
    assert not any(entry["logger"] == "kindle.runtime" for entry in lines_of(server, request_id))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_missing_or_unusable_id_gets_a_generated_one(
    servers: dict[str, Server], reviews: pd.DataFrame, protocol: str
) -> None:
    server = servers[protocol]
    texts, _ = texts_and_summaries(reviews.head(2))
    for presented in (None, "x" * 200):  # absent, and too long to be trusted into logs
        outcome, echoed = call(server, {"texts": texts}, None, presented)
        assert outcome == OK[protocol] and echoed and GENERATED_ID.fullmatch(echoed), echoed
        assert {entry["msg"] for entry in lines_of(server, echoed)} >= {"scored", "model call"}


def test_every_log_line_is_json(servers: dict[str, Server]) -> None:
    for server in servers.values():
        entries = log_entries(server)  # raises on any line that is not JSON
        assert len(entries) >= 5
        assert all({"ts", "level", "logger", "msg", "request_id"} <= set(entry) for entry in entries)
        loggers = {entry["logger"] for entry in entries}
        assert any(name.startswith("bentoml") for name in loggers), loggers  # BentoML's own lines too
        assert all(isinstance(entry["request_id"], str) for entry in entries)
        assert any(entry["msg"] == "champion loaded" and entry["request_id"] == "-" for entry in entries)
