"""The gates in process: HttpGate with a stub ASGI app, GrpcGate on a real grpc server with a
stub `BentoService/Call`: readiness, admission, limits, request ids, for every API the
service declares."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from bentoml.grpc.v1 import service_pb2 as pb

from services.champion import ModelState
from services.security import Guard, MemoryTokenBucket
from services.service import svc  # the service as served: its APIs and how it registers its gates
from services.transport import GRPC_CALL, READINESS_EXEMPT, GrpcGate, HttpGate, _peer_host


class StubApp:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        self.calls += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def request(gate: HttpGate, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    return asyncio.run(exchange(gate, path, headers))


async def exchange(
    gate: HttpGate, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict, dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "path": path,
        "client": ("10.0.0.1", 1234),
        "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    await gate(scope, receive, send)
    start, body = sent[0], sent[-1].get("body", b"")
    response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], response_headers, json.loads(body) if body else {}


ROUTES = {"/predict": "predict", "/metadata": "metadata"}


def make_gate(ready: bool = True, key: str | None = None, limiter: Any = None) -> tuple[HttpGate, StubApp]:
    app = StubApp()
    return HttpGate(app, Guard(key, limiter), model_state(ready), max_body_bytes=1000, routes=ROUTES), app


def model_state(ready: bool) -> ModelState:
    state = ModelState()
    if ready:
        state.bundle, state.error = object(), None  # type: ignore[assignment]
    else:
        state.error = "BundleError: manifest.json missing"
    return state


def test_readyz_says_why_until_ready() -> None:
    gate, app = make_gate(ready=False)
    status, _, body = request(gate, "/readyz")
    assert status == 503 and body == {"ready": False, "reason": "BundleError: manifest.json missing"}
    status, _, body = request(gate, "/predict")
    assert status == 503 and "manifest.json missing" in body["error"] and app.calls == 0
    assert request(gate, "/metadata")[0] == 200  # metadata explains the state
    ready_gate, _ = make_gate(ready=True)
    assert request(ready_gate, "/readyz")[0] == 200


def test_api_key_and_request_id() -> None:
    gate, app = make_gate(key="k")
    status, headers, body = request(gate, "/predict", {"x-request-id": "abc-1"})
    assert status == 401 and body["kind"] == "unauthenticated" and headers["x-request-id"] == "abc-1"
    assert "retry-after" not in headers
    status, headers, _ = request(gate, "/predict", {"x-api-key": "k"})
    assert status == 200 and len(headers["x-request-id"]) == 32 and app.calls == 1
    assert request(gate, "/livez")[0] == 200  # probes and /metrics need no key


def test_rate_limit_and_body_limit() -> None:
    gate, _ = make_gate(limiter=MemoryTokenBucket(rate_per_s=0.5, burst=1))
    assert request(gate, "/predict")[0] == 200
    status, headers, body = request(gate, "/predict")
    assert status == 429 and body["kind"] == "rate_limited" and int(headers["retry-after"]) >= 1
    gate, _ = make_gate()
    assert request(gate, "/predict", {"content-length": "5000"})[0] == 413
    assert request(gate, "/predict", {"content-length": "abc"})[0] == 400


def test_a_grpc_peer_is_named_as_http_names_the_client() -> None:
    """One client, one rate-limit bucket, whichever protocol it calls over."""
    assert _peer_host("ipv4:127.0.0.1:50412") == "127.0.0.1"
    assert _peer_host("ipv6:[::1]:50412") == _peer_host("ipv6:%5B::1%5D:50412") == "::1"
    assert _peer_host("unix:/run/kindle.sock") == "unix:/run/kindle.sock"


# ----------------------------------------------------------------------- every declared API, both protocols

KEY = "k"
KEYED = {"x-api-key": KEY}
BODY_LIMIT = 1000  # bytes, over HTTP (KINDLE_MAX_BODY_BYTES) and gRPC (the largest message)


class HeldApp(StubApp):
    """Holds every request until `release` is set: a call in flight for as long as a test needs."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.release = asyncio.Event(), asyncio.Event()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        self.entered.set()
        await self.release.wait()
        await super().__call__(scope, receive, send)


def served_http_gate(app: Any, guard: Guard, ready: bool = True) -> HttpGate:
    """The HTTP gate as the service registers it (its routes: every API), on a test guard."""
    options = next(options for cls, options in svc.middlewares if cls is HttpGate)
    return HttpGate(
        app, **{**options, "guard": guard, "state": model_state(ready), "max_body_bytes": BODY_LIMIT}
    )


def served_grpc_gate(guard: Guard, ready: bool = True) -> GrpcGate:
    """The gRPC interceptor as the service registers it (its API names: every API), on a test guard."""
    options = next(i.keywords for i in svc.interceptors if i.func is GrpcGate)
    return GrpcGate(**{**options, "guard": guard, "state": model_state(ready)})


async def held_and_next(
    first: Callable[[], Awaitable[Any]], then: Callable[[], Awaitable[Any]], app: Any
) -> Any:
    """The outcome of `then` while `first` is held in flight by `app` (then released); "held
    too" when `then` was let through to be held as well, i.e. no gate refused it."""
    held = asyncio.create_task(first())
    await app.entered.wait()
    try:
        outcome = await asyncio.wait_for(then(), timeout=10)
    except TimeoutError:
        outcome = "held too"
    app.release.set()
    await held
    return outcome


async def http_gates(route: str) -> dict[str, Any]:
    """(status, refusal kind) of a call to `route` past or stopped by each gate."""

    async def call(gate: HttpGate, headers: dict[str, str] = KEYED) -> tuple[int, Any]:
        status, _, body = await exchange(gate, route, headers)
        return status, body.get("kind")

    bucket = MemoryTokenBucket(rate_per_s=0.001, burst=1)
    limited = served_http_gate(StubApp(), Guard(KEY, bucket))
    await call(limited)
    held = HeldApp()
    capped = served_http_gate(held, Guard(KEY, None, max_in_flight=1))
    return {
        "admitted": await call(served_http_gate(StubApp(), Guard(KEY, None))),
        "no_key": await call(served_http_gate(StubApp(), Guard(KEY, None)), {}),
        "rate_limited": await call(limited),
        "too_large": await call(
            served_http_gate(StubApp(), Guard(KEY, None)), {**KEYED, "content-length": str(BODY_LIMIT + 1)}
        ),
        "not_ready": await call(served_http_gate(StubApp(), Guard(KEY, None), ready=False)),
        "overloaded": await held_and_next(lambda: call(capped), lambda: call(capped), held),
    }


class StubCall:
    """`BentoService/Call` answering an empty Response (held while `hold` says so); counts the
    messages it had deserialised."""

    def __init__(self, hold: bool = False) -> None:
        self.parsed, self.hold = 0, hold
        self.entered, self.release = asyncio.Event(), asyncio.Event()

    def deserialize(self, raw: bytes) -> Any:
        self.parsed += 1
        return pb.Request.FromString(raw)

    async def call(self, request: Any, context: Any) -> Any:
        if self.hold:
            self.entered.set()
            await self.release.wait()
        return pb.Response()

    def handler(self) -> grpc.GenericRpcHandler:
        method = grpc.unary_unary_rpc_method_handler(
            self.call,
            request_deserializer=self.deserialize,
            response_serializer=pb.Response.SerializeToString,
        )
        return grpc.method_handlers_generic_handler("bentoml.grpc.v1.BentoService", {"Call": method})


@asynccontextmanager
async def grpc_server(gate: GrpcGate, stub: StubCall, max_message: int = BODY_LIMIT) -> AsyncIterator[Any]:
    """A real grpc server on a loopback port it picks, behind `gate`; yields a channel to it."""
    server = grpc.aio.server(interceptors=[gate], options=[("grpc.max_receive_message_length", max_message)])
    server.add_generic_rpc_handlers((stub.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        options = [("grpc.max_send_message_length", 64 * 2**20)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            yield channel
    finally:
        await server.stop(None)


async def grpc_call(channel: Any, api: str, key: str | None = KEY, raw: bytes = b"{}") -> grpc.StatusCode:
    call = channel.unary_unary(
        GRPC_CALL,
        request_serializer=pb.Request.SerializeToString,
        response_deserializer=pb.Response.FromString,
    )
    try:
        await call(
            pb.Request(api_name=api, serialized_bytes=raw),
            metadata=(("x-api-key", key),) if key else (),
            timeout=60,
        )
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def grpc_gates(api: str) -> dict[str, Any]:
    """The status code of a call to `api` past or stopped by each gate."""
    outcomes: dict[str, Any] = {}
    async with grpc_server(served_grpc_gate(Guard(KEY, None)), StubCall()) as channel:
        outcomes["admitted"] = await grpc_call(channel, api)
        outcomes["no_key"] = await grpc_call(channel, api, key=None)
        outcomes["too_large"] = await grpc_call(channel, api, raw=b" " * BODY_LIMIT)
    bucket = MemoryTokenBucket(rate_per_s=0.001, burst=1)
    async with grpc_server(served_grpc_gate(Guard(KEY, bucket)), StubCall()) as channel:
        await grpc_call(channel, api)
        outcomes["rate_limited"] = await grpc_call(channel, api)
    async with grpc_server(served_grpc_gate(Guard(KEY, None), ready=False), StubCall()) as channel:
        outcomes["not_ready"] = await grpc_call(channel, api)
    held = StubCall(hold=True)
    async with grpc_server(served_grpc_gate(Guard(KEY, None, max_in_flight=1)), held) as channel:
        call = lambda: grpc_call(channel, api)  # noqa: E731
        outcomes["overloaded"] = await held_and_next(call, call, held)
    assert held.parsed == 1, "the call over the cap was refused before its message was read"
    return outcomes


@pytest.mark.parametrize("api", list(svc.apis))
def test_every_declared_api_goes_through_every_gate(api: str) -> None:
    """Each `@svc.api`, enumerated from the service itself, through the gates as the service
    registers them: a new API gets them all, or this test names it. Readiness spares only
    the APIs that need no model."""
    ready = (200, None) if api in READINESS_EXEMPT else (503, "not_ready")
    assert asyncio.run(http_gates(svc.apis[api].route)) == {
        "admitted": (200, None),
        "no_key": (401, "unauthenticated"),
        "rate_limited": (429, "rate_limited"),
        "too_large": (413, "too_large"),
        "not_ready": ready,
        "overloaded": (503, "overloaded"),
    }
    codes = grpc.StatusCode
    assert asyncio.run(grpc_gates(api)) == {
        "admitted": codes.OK,
        "no_key": codes.UNAUTHENTICATED,
        "too_large": codes.RESOURCE_EXHAUSTED,
        "rate_limited": codes.RESOURCE_EXHAUSTED,
        "not_ready": codes.OK if api in READINESS_EXEMPT else codes.UNAVAILABLE,
        "overloaded": codes.UNAVAILABLE,
    }


def errors_counted(api: str, protocol: str, kind: str) -> float:
    from prometheus_client import REGISTRY

    labels = {"api": api, "protocol": protocol, "type": kind}
    return REGISTRY.get_sample_value("kindle_errors_total", labels) or 0.0


def test_over_the_in_flight_cap_is_503_with_retry_after_and_counted() -> None:
    held = HeldApp()
    gate = served_http_gate(held, Guard(KEY, None, max_in_flight=1))
    before = errors_counted("predict", "http", "overloaded")

    async def run() -> tuple[Any, Any]:
        refused = await held_and_next(
            lambda: exchange(gate, "/predict", KEYED), lambda: exchange(gate, "/predict", KEYED), held
        )
        return refused, await exchange(gate, "/predict", KEYED)

    (status, headers, body), after_release = asyncio.run(run())
    assert status == 503 and body["kind"] == "overloaded" and int(headers["retry-after"]) >= 1
    assert "1 requests in flight" in body["error"] and headers["x-request-id"]
    assert held.calls == 2  # the held call and the one after it: the refused one never reached the app
    assert after_release[0] == 200  # the held call gave its place back
    assert errors_counted("predict", "http", "overloaded") == before + 1


def test_a_grpc_call_without_the_key_is_refused_before_its_message_is_read() -> None:
    """32 MiB without the key: refused UNAUTHENTICATED from the call's metadata, the message
    never deserialised (nor read by the handler), as HTTP refuses before reading the body."""
    stub = StubCall()

    async def run() -> tuple[grpc.StatusCode, float]:
        async with grpc_server(served_grpc_gate(Guard(KEY, None)), stub, max_message=64 * 2**20) as channel:
            started = time.perf_counter()
            code = await grpc_call(channel, "predict", key=None, raw=b" " * (32 * 2**20))
            return code, time.perf_counter() - started

    before = errors_counted("unknown", "grpc", "unauthenticated")
    code, seconds = asyncio.run(run())
    print(f"32 MiB gRPC call without the key: {code.name} in {seconds * 1000:.0f} ms")
    assert code == grpc.StatusCode.UNAUTHENTICATED and stub.parsed == 0
    assert seconds < 5, seconds
    assert errors_counted("unknown", "grpc", "unauthenticated") == before + 1
