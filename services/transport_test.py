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
from services.security import FEEDBACK_API, Guard, KeyRing, MemoryTokenBucket, TrustedProxies
from services.service import svc  # the service as served: its APIs and how it registers its gates
from services.transport import (
    ADMISSION,
    GRPC_CALL,
    READINESS_EXEMPT,
    GrpcGate,
    HttpGate,
    _peer_host,
    charge_reviews,
    client,
)


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
    gate: HttpGate, path: str, headers: dict[str, str] | None = None, peer: str = "10.0.0.1"
) -> tuple[int, dict, dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "path": path,
        "client": (peer, 1234),
        "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    await gate(scope, receive, send)
    start, body = sent[0], sent[-1].get("body", b"")
    response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], response_headers, json.loads(body) if body else {}


ROUTES = {"/predict": "predict", "/metadata": "metadata", "/feedback": "feedback"}


def make_gate(
    ready: bool = True, key: str | None = None, limiter: Any = None, app: Any = None, **options: Any
) -> tuple[HttpGate, Any]:
    app = app or StubApp()
    guard = Guard(key, limiter, feedback_keys=options.pop("feedback_keys", None))
    return HttpGate(app, guard, model_state(ready), max_body_bytes=1000, routes=ROUTES, **options), app


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
FEEDBACK_KEY = "fk"
RING = KeyRing.parse(f"tester={FEEDBACK_KEY}")


def key_for(api: str) -> str:
    """The credential that opens `api`: a feedback key for feedback, the API key for the others."""
    return FEEDBACK_KEY if api == FEEDBACK_API else KEY


def guard(limiter: Any = None, max_in_flight: int = 2**31 - 1) -> Guard:
    return Guard(KEY, limiter, max_in_flight, feedback_keys=RING)


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


async def http_gates(api: str) -> dict[str, Any]:
    """(status, refusal kind) of a call to `api` past or stopped by each gate."""
    route, keyed = svc.apis[api].route, {"x-api-key": key_for(api)}

    async def call(gate: HttpGate, headers: dict[str, str] = keyed) -> tuple[int, Any]:
        status, _, body = await exchange(gate, route, headers)
        return status, body.get("kind")

    bucket = MemoryTokenBucket(rate_per_s=0.001, burst=1)
    limited = served_http_gate(StubApp(), guard(bucket))
    await call(limited)
    held = HeldApp()
    capped = served_http_gate(held, guard(max_in_flight=1))
    return {
        "admitted": await call(served_http_gate(StubApp(), guard())),
        "no_key": await call(served_http_gate(StubApp(), guard()), {}),
        "rate_limited": await call(limited),
        "too_large": await call(
            served_http_gate(StubApp(), guard()), {**keyed, "content-length": str(BODY_LIMIT + 1)}
        ),
        "not_ready": await call(served_http_gate(StubApp(), guard(), ready=False)),
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
    key = key_for(api)
    async with grpc_server(served_grpc_gate(guard()), StubCall()) as channel:
        outcomes["admitted"] = await grpc_call(channel, api, key)
        outcomes["no_key"] = await grpc_call(channel, api, key=None)
        outcomes["too_large"] = await grpc_call(channel, api, key, raw=b" " * BODY_LIMIT)
    bucket = MemoryTokenBucket(rate_per_s=0.001, burst=1)
    async with grpc_server(served_grpc_gate(guard(bucket)), StubCall()) as channel:
        await grpc_call(channel, api, key)
        outcomes["rate_limited"] = await grpc_call(channel, api, key)
    async with grpc_server(served_grpc_gate(guard(), ready=False), StubCall()) as channel:
        outcomes["not_ready"] = await grpc_call(channel, api, key)
    held = StubCall(hold=True)
    async with grpc_server(served_grpc_gate(guard(max_in_flight=1)), held) as channel:
        call = lambda: grpc_call(channel, api, key)  # noqa: E731
        outcomes["overloaded"] = await held_and_next(call, call, held)
    assert held.parsed == 1, "the call over the cap was refused before its message was read"
    return outcomes


@pytest.mark.parametrize("api", list(svc.apis))
def test_every_declared_api_goes_through_every_gate(api: str) -> None:
    """Each `@svc.api`, enumerated from the service itself, through the gates as the service
    registers them: a new API gets them all, or this test names it. Readiness spares only
    the APIs that need no model."""
    ready = (200, None) if api in READINESS_EXEMPT else (503, "not_ready")
    assert asyncio.run(http_gates(api)) == {
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
    gate = served_http_gate(held, guard(max_in_flight=1))
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
        async with grpc_server(served_grpc_gate(guard()), stub, max_message=64 * 2**20) as channel:
            started = time.perf_counter()
            code = await grpc_call(channel, "predict", key=None, raw=b" " * (32 * 2**20))
            return code, time.perf_counter() - started

    before = errors_counted("unknown", "grpc", "unauthenticated")
    code, seconds = asyncio.run(run())
    print(f"32 MiB gRPC call without the key: {code.name} in {seconds * 1000:.0f} ms")
    assert code == grpc.StatusCode.UNAUTHENTICATED and stub.parsed == 0
    assert seconds < 5, seconds
    assert errors_counted("unknown", "grpc", "unauthenticated") == before + 1


# ----------------------------------------------------------------------- credentials, reviews, addresses


class ReviewsApp(StubApp):
    """An API taking `reviews` reviews, as the service's do: charges them once parsed, and on a
    shortfall answers as BentoML answers a BentoMLException (which the gate replaces)."""

    def __init__(self, reviews: int = 1) -> None:
        super().__init__()
        self.reviews, self.clients = reviews, []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        self.calls += 1
        self.clients.append(client())
        try:
            await charge_reviews("predict", self.reviews)
        except Exception as error:
            body = json.dumps({"error": str(error)}).encode()
            await send({"type": "http.response.start", "status": 429, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def test_feedback_opens_with_a_feedback_key_only_and_is_off_without_one() -> None:
    app = ReviewsApp()
    gate, _ = make_gate(key=KEY, feedback_keys=RING, app=app)
    status, _, body = request(gate, "/feedback", {"x-api-key": KEY})
    assert status == 401 and "feedback key" in body["error"]  # the API key does not open it
    assert request(gate, "/feedback", {"x-api-key": FEEDBACK_KEY})[0] == 200
    assert app.clients == ["tester"]  # the API sees who sent it
    assert request(gate, "/predict", {"x-api-key": FEEDBACK_KEY})[0] == 401  # nor a feedback key predict
    assert request(gate, "/predict", KEYED)[0] == 200 and app.clients[-1] is None
    for key in (None, KEY):
        off, _ = make_gate(key=key)
        status, _, body = request(off, "/feedback", {"x-api-key": KEY})
        assert status == 403 and body["kind"] == "feedback_off" and "KINDLE_FEEDBACK_KEYS" in body["error"]


def test_a_call_pays_a_token_per_review_and_a_shortfall_is_429_with_retry_after() -> None:
    bucket = MemoryTokenBucket(rate_per_s=0.01, burst=10)
    ten, one = ReviewsApp(10), ReviewsApp(1)
    gate_ten, _ = make_gate(limiter=bucket, app=ten)
    gate_one, _ = make_gate(limiter=bucket, app=one)
    assert request(gate_ten, "/predict")[0] == 200  # 10 reviews from a full bucket of 10
    status, headers, body = request(gate_one, "/predict")
    assert status == 429 and body["kind"] == "rate_limited" and "10.0.0.1" in body["error"]
    assert int(headers["retry-after"]) >= 1 and one.calls == 0  # refused at admission
    refilled = MemoryTokenBucket(rate_per_s=0.01, burst=10)
    refilled.take("10.0.0.1", now=None, cost=5)  # 5 left: the first passes admission, the rest do not
    gate, _ = make_gate(limiter=refilled, app=ReviewsApp(10))
    status, headers, body = request(gate, "/predict")
    assert status == 429 and body["kind"] == "rate_limited" and int(headers["retry-after"]) >= 1
    assert "10 reviews need 9 more tokens" in body["error"] and headers["x-request-id"]


def test_forwarded_for_names_the_bucket_only_behind_a_trusted_proxy() -> None:
    def outcomes(proxies: str | None) -> list[int]:
        gate, _ = make_gate(
            limiter=MemoryTokenBucket(rate_per_s=0.001, burst=1), proxies=TrustedProxies.parse(proxies)
        )
        calls = [("127.0.0.1", "198.51.100.1"), ("127.0.0.1", "198.51.100.2"), ("127.0.0.1", "198.51.100.1")]
        return [
            asyncio.run(exchange(gate, "/predict", {"x-forwarded-for": xff}, peer=peer))[0]
            for peer, xff in calls
        ]

    assert outcomes(None) == [200, 429, 429]  # one bucket: the peer's
    assert outcomes("10.0.0.0/8") == [200, 429, 429]  # 127.0.0.1 is not a trusted proxy
    assert outcomes("127.0.0.1") == [200, 200, 429]  # a bucket per forwarded address


class ChargingCall(StubCall):
    """`BentoService/Call` taking `reviews` reviews: charges them, and on a shortfall aborts
    as BentoML's servicer does (UNAVAILABLE for a 429), which the gate makes its own."""

    def __init__(self, reviews: int) -> None:
        super().__init__()
        self.reviews, self.clients, self.addresses = reviews, [], []

    async def call(self, request: Any, context: Any) -> Any:
        admission = ADMISSION.get()
        self.clients.append(client())
        self.addresses.append(admission.caller.bucket if admission else None)
        try:
            await charge_reviews(request.api_name, self.reviews)
        except Exception as error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
        return pb.Response()


async def grpc_details(channel: Any, api: str, key: str | None, xff: str | None = None) -> tuple[Any, str]:
    call = channel.unary_unary(
        GRPC_CALL,
        request_serializer=pb.Request.SerializeToString,
        response_deserializer=pb.Response.FromString,
    )
    metadata = tuple(m for m in (("x-api-key", key), ("x-forwarded-for", xff)) if m[1] is not None)
    try:
        await call(pb.Request(api_name=api, serialized_bytes=b"{}"), metadata=metadata, timeout=60)
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def test_grpc_credentials_reviews_and_forwarded_addresses() -> None:
    codes = grpc.StatusCode

    async def run() -> None:
        ten = ChargingCall(10)
        bucket = MemoryTokenBucket(rate_per_s=0.01, burst=10)
        trusting = GrpcGate(
            guard(bucket), model_state(True), list(svc.apis), proxies=TrustedProxies.parse("127.0.0.1")
        )
        async with grpc_server(trusting, ten) as channel:
            assert await grpc_details(channel, "feedback", FEEDBACK_KEY, "198.51.100.1") == (codes.OK, "")
            code, details = await grpc_details(channel, "feedback", FEEDBACK_KEY, "198.51.100.2")
            assert code == codes.RESOURCE_EXHAUSTED and "client 'tester'" in details  # the key's bucket
            assert ten.clients == ["tester"]  # the second was refused at admission
            code, details = await grpc_details(channel, "feedback", KEY)
            assert code == codes.UNAUTHENTICATED and "feedback key" in details
            assert (await grpc_details(channel, "predict", FEEDBACK_KEY))[0] == codes.UNAUTHENTICATED
            assert (await grpc_details(channel, "predict", KEY))[0] == codes.OK  # the API key's bucket
            code, details = await grpc_details(channel, "predict", KEY)
            assert code == codes.RESOURCE_EXHAUSTED and "the API key" in details
        open_guard = Guard(None, MemoryTokenBucket(rate_per_s=0.01, burst=10))
        # Untrusted, the header changes nothing: the second call finds the peer's bucket empty.
        for proxies, expected in ((None, ["127.0.0.1"]), ("127.0.0.1", ["198.51.100.1", "198.51.100.2"])):
            stub = ChargingCall(10)
            gate = GrpcGate(
                open_guard, model_state(True), list(svc.apis), proxies=TrustedProxies.parse(proxies)
            )
            open_guard.limiter = MemoryTokenBucket(rate_per_s=0.01, burst=10)
            async with grpc_server(gate, stub) as channel:
                first = await grpc_details(channel, "predict", None, "198.51.100.1")
                second = await grpc_details(channel, "predict", None, "198.51.100.2")
            assert stub.addresses == expected and first[0] == codes.OK
            assert second[0] == (codes.OK if proxies else codes.RESOURCE_EXHAUSTED), second
            off = GrpcGate(Guard(KEY, None), model_state(True), list(svc.apis))
            async with grpc_server(off, StubCall()) as channel:
                code, details = await grpc_details(channel, "feedback", KEY)
            assert code == codes.PERMISSION_DENIED and "KINDLE_FEEDBACK_KEYS" in details

    asyncio.run(run())
