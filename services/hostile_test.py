"""Hostile input against real servers: generated requests over HTTP (schemathesis, from the
service's own OpenAPI document) and gRPC (hypothesis), body limits enforced before parsing,
no secrets in the logs, and a container that does not run as root.

What "survives" means here: no request ever gets a 5xx (HTTP) or UNKNOWN/INTERNAL (gRPC);
every refusal is a 4xx / INVALID_ARGUMENT (or RESOURCE_EXHAUSTED for an oversized message)
with a message saying what is wrong; the servers are still up and ready at the end.
Generation is derandomized, so a failure reproduces on the next run.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
import schemathesis
from google.protobuf import struct_pb2
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests import fixtures
from tests.fixtures.service import Server, build_test_bento, metric_sum, running, scrape

API_KEY = f"kindle-secret-{uuid.uuid4().hex}"
FEEDBACK_KEY = f"kindle-feedback-{uuid.uuid4().hex}"  # the open servers' (feedback is off without one)
BODY_LIMIT = 64 * 1024  # the guarded server's KINDLE_MAX_BODY_BYTES: small, so overflowing it is cheap
APIS = ("predict", "predict_batch", "explain", "feedback", "metadata")
CASES_PER_MODE = 500  # positive + negative: 1,000 generated requests per API
GRPC_CASES = 600
FUZZ_SETTINGS = settings(
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def bento(work: Path) -> tuple[str, Path]:
    tag, home, _ = build_test_bento(work, fixtures.kindle_reviews().head(2500))
    return tag, home


@pytest.fixture(scope="module")
def servers(work: Path, bento: tuple[str, Path]) -> Iterator[dict[str, Server]]:
    tag, home = bento
    guarded = {
        "KINDLE_API_KEY": API_KEY,
        "KINDLE_MAX_BODY_BYTES": str(BODY_LIMIT),
        "KINDLE_LOG_LEVEL": "DEBUG",  # the most the service ever logs
        "KINDLE_ACCESS_LOG": "true",
        "KINDLE_MAX_IN_FLIGHT": "1",  # the guarded servers' tests call one at a time
    }
    feedback = {"KINDLE_FEEDBACK_KEYS": f"fuzzer={FEEDBACK_KEY}"}
    specs = {
        "http": ("http", feedback),
        "grpc": ("grpc", feedback),
        "guarded": ("http", guarded),
        "grpc_guarded": ("grpc", guarded),
    }
    with running(specs, tag, home, work) as started:
        yield started


# --------------------------------------------------------------------------- HTTP: schemathesis


def _openapi(server: Server) -> dict[str, Any]:
    reply = requests.get(f"{server.url}/docs.json", timeout=10)
    assert reply.status_code == 200, reply.text
    return reply.json()


def _request_schema(spec: dict[str, Any], api: str) -> dict[str, Any]:
    return spec["paths"][f"/{api}"]["post"]["requestBody"]["content"]["application/json"]["schema"]


def test_openapi_documents_the_real_input_contract(servers: dict[str, Server]) -> None:
    spec = _openapi(servers["http"])
    predict = _request_schema(spec, "predict")
    assert predict["required"] == ["texts"] and predict["additionalProperties"] is False
    assert predict["properties"]["texts"]["maxItems"] == 1000
    assert predict["properties"]["texts"]["items"]["maxLength"] == 20000
    assert _request_schema(spec, "explain")["properties"]["top_k"]["maximum"] == 50
    records = _request_schema(spec, "predict_batch")["oneOf"][0]
    assert records["type"] == "array" and records["items"]["required"] == ["reviewText"]
    feedback = _request_schema(spec, "feedback")
    assert feedback["required"] == ["texts", "ratings"]
    assert feedback["properties"]["ratings"]["items"] == {"type": "integer", "minimum": 1, "maximum": 5}


def _refusal_names_the_problem(status: int, text: str) -> bool:
    """A 4xx body is a JSON string or object with a message of its own, or plain text."""
    try:
        body = json.loads(text)
    except ValueError:
        return bool(text.strip())
    message = body.get("error") if isinstance(body, dict) else body
    return isinstance(message, str) and len(message) > 10


@pytest.mark.parametrize("api", APIS)
def test_generated_http_requests_never_fail_the_server(servers: dict[str, Server], api: str) -> None:
    server = servers["http"]
    schema = schemathesis.openapi.from_dict(_openapi(server))
    operation = schema[f"/{api}"]["POST"]
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    session = requests.Session()

    for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

        @settings(FUZZ_SETTINGS, max_examples=CASES_PER_MODE)
        @given(case=operation.as_strategy(generation_mode=mode))
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call(
                base_url=server.url, session=session, headers={"x-api-key": FEEDBACK_KEY}, timeout=30
            )
            statuses[response.status_code] += 1
            text = response.content.decode("utf-8", "replace")
            if response.status_code >= 500 or (
                response.status_code >= 400 and not _refusal_names_the_problem(response.status_code, text)
            ):
                failures.append(f"{mode} {response.status_code} {text[:200]!r} for {case.body!r:.300}")  # noqa: B023

        fuzz()  # runs within this iteration, so `mode` is the current one

    tried = sum(statuses.values())
    print(f"{api}: {tried} generated requests, statuses {dict(sorted(statuses.items()))}")
    assert not failures, failures[:5]
    assert tried >= 2 * CASES_PER_MODE * 0.9, statuses  # hypothesis may stop early only on tiny spaces
    assert any(400 <= status < 500 for status in statuses), statuses  # the negative mode did reach us
    if api != "metadata":
        assert statuses[200] > 0, statuses  # and so did valid requests


# --------------------------------------------------------------------------- gRPC: hypothesis

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)  # protobuf strings are UTF-8
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**53), 2**53))
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(TEXT, inner, max_size=5)),
    max_leaves=20,
)
FIELD_VALUES = st.one_of(JSON_VALUES, st.lists(st.one_of(TEXT, JSON_VALUES), min_size=0, max_size=6))
SHAPED = st.fixed_dictionaries(
    {},
    optional={
        "texts": FIELD_VALUES,
        "summaries": FIELD_VALUES,
        "top_k": st.one_of(NUMBERS, JSON_VALUES),
        "ratings": st.one_of(st.lists(NUMBERS, max_size=6), FIELD_VALUES),
        "request_ids": FIELD_VALUES,
        "records": FIELD_VALUES,
        "reviewText": FIELD_VALUES,
    },
)
HUGE_INT_JSON = st.integers(4_000, 6_000).map(lambda digits: f'{{"texts": ["a"], "top_k": {"9" * digits}}}')
RAW_BYTES = st.one_of(
    st.binary(max_size=200),
    HUGE_INT_JSON.map(str.encode),
    st.sampled_from(
        ['{"texts": [NaN]}', '{"texts": ["a"], "top_k": Infinity}', "[" * 50_000, '"\\ud800"']
    ).map(str.encode),
    st.one_of(SHAPED, JSON_VALUES).map(lambda value: json.dumps(value, allow_nan=True).encode()),
)
# Mostly (7 in 10) real API names, so most calls reach the payload checks.
API_NAMES = st.integers(0, 9).flatmap(
    lambda draw: (
        st.sampled_from(APIS) if draw < 7 else st.one_of(TEXT, st.just(""), st.just("predict" * 2000))
    )
)
GRPC_CALL = "/bentoml.grpc.v1.BentoService/Call"
GRPC_OK = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}


def _struct_value(value: Any) -> struct_pb2.Value:
    """JSON to `google.protobuf.Value` directly (json_format refuses NaN and infinity)."""
    out = struct_pb2.Value()
    if value is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int | float):
        out.number_value = float(value)
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, list):
        out.list_value.values.extend(_struct_value(item) for item in value)
    else:
        for key, item in value.items():
            out.struct_value.fields[key].CopyFrom(_struct_value(item))
    return out


class GrpcClient:
    """One channel for many calls; (code, details) of `BentoService/Call`."""

    def __init__(self, server: Server, key: str | None = None) -> None:
        from bentoml.grpc.v1 import service_pb2, service_pb2_grpc

        self.metadata = (("x-api-key", key),) if key else ()
        self.pb = service_pb2
        options = [("grpc.max_send_message_length", 128 * 2**20)]
        self.channel = grpc.insecure_channel(f"127.0.0.1:{server.port}", options=options)
        self.stub = service_pb2_grpc.BentoServiceStub(self.channel)

    def call(self, request: Any) -> tuple[grpc.StatusCode, str]:
        """`request`: a `Request`, or its wire bytes (for messages this client cannot build)."""
        try:
            if isinstance(request, bytes):
                self.channel.unary_unary(GRPC_CALL)(request, metadata=self.metadata, timeout=30)
            else:
                self.stub.Call(request, metadata=self.metadata, timeout=30)
        except grpc.RpcError as error:
            return error.code(), error.details() or ""
        return grpc.StatusCode.OK, ""


def _check_grpc(outcome: tuple[grpc.StatusCode, str], what: str) -> None:
    code, details = outcome
    assert code in GRPC_OK, (what, code, details)
    if code != grpc.StatusCode.OK:
        assert len(details) > 10, (what, code, details)


def test_generated_grpc_requests_are_never_unknown_or_internal(servers: dict[str, Server]) -> None:
    client = GrpcClient(servers["grpc"], key=FEEDBACK_KEY)
    codes: Counter[str] = Counter()

    @settings(FUZZ_SETTINGS, max_examples=GRPC_CASES)
    @given(
        api=API_NAMES,
        body=st.one_of(
            SHAPED.map(lambda value: ("json", value)),
            JSON_VALUES.map(lambda value: ("json", value)),
            RAW_BYTES.map(lambda raw: ("serialized_bytes", raw)),
        ),
    )
    def fuzz(api: str, body: tuple[str, Any]) -> None:
        field, value = body
        if field == "json":
            request = client.pb.Request(api_name=api, json=_struct_value(value))
        else:
            request = client.pb.Request(api_name=api, serialized_bytes=value)
        outcome = client.call(request)
        codes[outcome[0].name] += 1
        _check_grpc(outcome, f"{api[:40]!r} {field} {value!r:.200}")

    try:
        fuzz()
    finally:
        client.channel.close()
    print(f"gRPC: {sum(codes.values())} generated calls, codes {dict(codes)}")
    assert codes["INVALID_ARGUMENT"] > 0 and codes["OK"] > 0, codes


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        out.append(number & 0x7F | (0x80 if number > 0x7F else 0))
        number >>= 7
        if not number:
            return bytes(out)


def _deep_request_bytes(depth: int) -> bytes:
    """Wire bytes of `Request(api_name="predict", json=[[[...]]])` nested `depth` lists deep:
    deeper than protobuf's recursion limit (100), which no protobuf library will serialise."""
    value = _length_delimited(3, b"deep")  # Value.string_value
    for _ in range(depth):
        value = _length_delimited(6, _length_delimited(1, value))  # Value.list_value.values[0]
    return _length_delimited(1, b"predict") + _length_delimited(9, value)  # api_name, json


def test_grpc_edge_cases(servers: dict[str, Server]) -> None:
    client = GrpcClient(servers["grpc"], key=FEEDBACK_KEY)
    pb = client.pb
    cases = {
        "no_content_field": pb.Request(api_name="predict"),
        "deep_struct": pb.Request(api_name="predict", json=_struct_value({"texts": _nested(40)})),
        "deep_struct_over_protobuf_limit": _deep_request_bytes(300),
        "deep_bytes": pb.Request(api_name="predict", serialized_bytes=b"[" * 200_000 + b"]" * 200_000),
        "nan_and_inf": pb.Request(api_name="predict", json=_struct_value({"texts": [math.nan, math.inf]})),
        "float_top_k": pb.Request(api_name="explain", json=_struct_value({"texts": ["a"], "top_k": 1e308})),
        "huge_int": pb.Request(
            api_name="explain", serialized_bytes=b'{"texts": ["a"], "top_k": 1' + b"0" * 5000 + b"}"
        ),
        "unicode_edges": pb.Request(
            api_name="predict",
            json=_struct_value({"texts": ["\u0000\u202e\ufeff\U0010ffff e\u0301 \U0001f4da" * 500, ""]}),
        ),
        "api_name_control_chars": pb.Request(
            api_name="\x00\n\u202epredict", json=_struct_value({"texts": ["a"]})
        ),
        "oversized": pb.Request(api_name="predict", serialized_bytes=b" " * (65 * 2**20)),
        "too_long_text": pb.Request(api_name="predict", json=_struct_value({"texts": ["x" * 20_001]})),
    }
    try:
        outcomes = {name: client.call(request) for name, request in cases.items()}
    finally:
        client.channel.close()
    for name, outcome in outcomes.items():
        _check_grpc(outcome, name)
    print("gRPC edge cases:", {name: code.name for name, (code, _) in outcomes.items()})
    assert outcomes["oversized"][0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert outcomes["unicode_edges"][0] == grpc.StatusCode.OK  # odd but valid text is scored
    assert (
        outcomes["nan_and_inf"][0] == grpc.StatusCode.INVALID_ARGUMENT and "NaN" in outcomes["nan_and_inf"][1]
    )


def test_servers_are_still_up_and_counted_no_server_errors(servers: dict[str, Server]) -> None:
    for name in ("http", "grpc"):
        values = scrape(servers[name])
        for status in ("500", "503", "INTERNAL", "UNKNOWN"):
            assert metric_sum(values, "kindle_requests_total", status=status) == 0, (name, status)
        assert metric_sum(values, "kindle_requests_total") >= GRPC_CASES, name
        assert servers[name].process.poll() is None
    assert requests.get(servers["http"].url + "/readyz", timeout=5).status_code == 200


# --------------------------------------------------------------------------- security


def _raw_http(
    server: Server, head: str, body_parts: list[bytes], timeout: float = 15.0
) -> tuple[int, bytes, float]:
    """(status, response bytes, seconds) of a hand-written request, read until the server answers."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(head.encode("latin-1"))
        for part in body_parts:
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):  # the server answered and closed early
                break
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        try:
            while chunk := sock.recv(65536):
                reply += chunk
                if len(reply) > 1 << 20:
                    break
        except (TimeoutError, ConnectionResetError):
            pass
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0
    return status, reply, time.monotonic() - started


def _head(server: Server, extra: str) -> str:
    return (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\ncontent-type: application/json\r\n"
        f"x-api-key: {API_KEY}\r\nconnection: close\r\n{extra}\r\n"
    )


def test_announced_oversized_body_is_refused_before_it_is_read(servers: dict[str, Server]) -> None:
    server = servers["guarded"]
    # Announces a gigabyte and sends 16 bytes: only a server that refuses on the header answers.
    status, reply, seconds = _raw_http(
        server, _head(server, "content-length: 1000000000\r\n"), [b'{"texts": ["a"]']
    )
    assert status == 413, reply[:300]
    assert b"too_large" in reply and str(BODY_LIMIT).encode() in reply
    assert seconds < 10, seconds


def test_chunked_body_over_the_limit_is_413(servers: dict[str, Server]) -> None:
    server = servers["guarded"]
    chunk = b"x" * 8192
    frames = [b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(4 * BODY_LIMIT // len(chunk))]
    status, reply, _ = _raw_http(
        server, _head(server, "transfer-encoding: chunked\r\n"), [*frames, b"0\r\n\r\n"]
    )
    assert status == 413, reply[:300]
    assert f"over {BODY_LIMIT} bytes".encode() in reply
    # Under the limit, chunked is fine: the limit is on size, not on the encoding.
    small = json.dumps({"texts": ["Chunked but small, a good read."]}).encode()
    status, reply, _ = _raw_http(
        server,
        _head(server, "transfer-encoding: chunked\r\n"),
        [b"%x\r\n%s\r\n0\r\n\r\n" % (len(small), small)],
    )
    assert status == 200, reply[:300]


def test_api_key_never_reaches_the_logs(servers: dict[str, Server]) -> None:
    server = servers["guarded"]
    wrong_key = f"wrong-{uuid.uuid4().hex}"
    request_ids = [f"hostile-{i}-{uuid.uuid4().hex[:8]}" for i in range(3)]
    calls = [
        (API_KEY, {"texts": ["Fine book."]}, 200),
        (wrong_key, {"texts": ["Fine book."]}, 401),
        (API_KEY, {"texts": [7]}, 400),  # logged at DEBUG with its request id
    ]
    for request_id, (key, body, expected) in zip(request_ids, calls, strict=True):
        reply = requests.post(
            f"{server.url}/predict",
            json=body,
            headers={"x-api-key": key, "x-request-id": request_id},
            timeout=30,
        )
        assert reply.status_code == expected, reply.text
        assert reply.headers["x-request-id"] == request_id
    time.sleep(1.0)  # log lines are flushed by the workers asynchronously
    log = server.tail(lines=100_000)
    assert API_KEY not in log and wrong_key not in log
    assert API_KEY[-12:] not in log  # not even a fragment
    records = [json.loads(line) for line in log.splitlines() if line.startswith('{"ts"')]
    assert records and all("request_id" in record for record in records)
    assert request_ids[2] in {record["request_id"] for record in records}, log[-2000:]


def test_container_runs_as_non_root(bento: tuple[str, Path]) -> None:
    """The Dockerfile `bentoml containerize` would build, generated without Docker."""
    tag, home = bento
    script = (
        "import sys, bentoml\n"
        "from bentoml._internal.container import construct_containerfile\n"
        "with construct_containerfile(bentoml.get(sys.argv[1]), enable_buildkit=False) as (_, path):\n"
        "    print(open(path).read())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, tag],
        env={**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    users = [line.split(None, 1)[1].strip() for line in done.stdout.splitlines() if line.startswith("USER ")]
    assert users, done.stdout[-2000:]
    assert users[-1] not in ("root", "0", "0:0"), users
    entrypoint = done.stdout.rfind("ENTRYPOINT")
    assert entrypoint > done.stdout.rfind("USER "), "the last USER must come before the entrypoint"


def test_over_the_in_flight_cap_is_503_before_the_body_is_read(servers: dict[str, Server]) -> None:
    """A client that announces a body and sends none holds the guarded worker's one place;
    the next request is refused at once with a Retry-After, and is served once it is gone."""
    server = servers["guarded"]
    body = json.dumps({"texts": ["Held while another call is in flight."]}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as holder:
        holder.sendall(_head(server, f"content-length: {len(body)}\r\n").encode("latin-1") + body[:10])
        refused = wait_for_status(server, body, 503)
        assert refused.json()["kind"] == "overloaded" and int(refused.headers["retry-after"]) >= 1
    wait_for_status(server, body, 200)  # the holder hung up: its place is free again
    assert metric_sum(scrape(server), "kindle_errors_total", api="predict", type="overloaded") >= 1


def wait_for_status(server: Server, body: bytes, status: int) -> requests.Response:
    """The first reply with `status` to a keyed predict, asked every 0.1 s for 15 s."""
    deadline = time.monotonic() + 15
    while True:
        reply = requests.post(f"{server.url}/predict", data=body, headers={"x-api-key": API_KEY}, timeout=15)
        if reply.status_code == status or time.monotonic() > deadline:
            assert reply.status_code == status, reply.text
            return reply
        time.sleep(0.1)


def _tree_usage(server: Server) -> tuple[float, int]:
    """(CPU seconds, resident bytes) of the server and its worker processes."""
    import psutil

    root = psutil.Process(server.process.pid)
    processes = [root, *root.children(recursive=True)]
    cpu = sum(sum(p.cpu_times()[:2]) for p in processes)
    return cpu, sum(p.memory_info().rss for p in processes)


def test_grpc_key_is_checked_before_the_message_is_read(servers: dict[str, Server]) -> None:
    """32 MiB without the key is UNAUTHENTICATED from the call's metadata, before grpc reads or
    protobuf parses the message; the same message with the key is read and parsed (and then
    refused by the guarded server's body limit), for comparison."""
    server = servers["grpc_guarded"]
    client = GrpcClient(server)
    message = client.pb.Request(api_name="predict", serialized_bytes=b" " * (32 * 2**20))
    figures = {}
    try:
        for name, metadata in (("no key", ()), ("key", (("x-api-key", API_KEY),))):
            cpu, _ = _tree_usage(server)
            started, code = time.monotonic(), grpc.StatusCode.OK
            try:
                client.stub.Call(message, metadata=metadata, timeout=60)
            except grpc.RpcError as error:
                code = error.code()
            seconds = time.monotonic() - started
            cpu_after, rss = _tree_usage(server)
            figures[name] = (code, seconds, cpu_after - cpu, rss)
    finally:
        client.channel.close()
    for name, (code, seconds, cpu, rss) in figures.items():
        usage = f"server CPU {cpu:.2f} s, RSS {rss / 2**20:.0f} MiB"
        print(f"gRPC 32 MiB, {name}: {code.name} in {seconds:.2f} s, {usage}")
    assert figures["no key"][0] == grpc.StatusCode.UNAUTHENTICATED and figures["no key"][1] < 5
    assert figures["key"][0] == grpc.StatusCode.INVALID_ARGUMENT
