"""Protocol glue: the same admission, readiness and accounting for HTTP and gRPC.

BentoML runs the API functions for both protocols, but what happens before them differs:
an ASGI middleware sees HTTP requests, a gRPC interceptor sees RPCs. Both do the same
things with the same helpers, for every API the service declares (its routes and names
are handed over from `svc.apis`, so a new API cannot skip them): give the call a request
id (echoed in the `x-request-id` response header / trailing metadata), refuse it when the
API key or the client's rate limit says so (401/UNAUTHENTICATED, 429/RESOURCE_EXHAUSTED;
BentoML would map 429 to UNAVAILABLE), when the model is not loaded (503/UNAVAILABLE, all
but `READINESS_EXEMPT`), or when the worker already has its most calls in flight
(503/UNAVAILABLE with a Retry-After), and count requests and latency per API and protocol.

Refusals cost next to nothing: HTTP refuses before the body is read; gRPC checks the API
key and the worker's capacity from the call's metadata, before the message is read, and
only the rate limit (which needs the peer's address) after it is deserialised. A gRPC
call refused before its message is read is counted under api "unknown" (the API's name
is in the message).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Collection, Mapping
from typing import Any, NamedTuple
from urllib.parse import unquote

import grpc
from google.protobuf.message import DecodeError

from services.champion import ModelState
from services.logs import REQUEST_ID
from services.metrics import get_metrics, record_error, set_protocol
from services.security import Denial, Guard

READINESS_EXEMPT = ("feedback", "metadata")
"""APIs that answer without a model: metadata says why none is loaded, feedback stores
ratings. Every other API, a new one included, is refused until the model is loaded."""
UNKNOWN_API = "unknown"
REQUEST_ID_HEADER = "x-request-id"
GRPC_CALL = "/bentoml.grpc.v1.BentoService/Call"
GRPC_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
GRPC_CODES = {
    401: grpc.StatusCode.UNAUTHENTICATED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


class Undecodable(NamedTuple):
    """Stands in for a request message that did not parse, so the interceptor can refuse it."""

    reason: str


def _request_id(presented: str | None) -> str:
    """The client's id when it is a sane token, else a fresh one (ids end up in logs)."""
    if presented and len(presented) <= 128 and presented.isprintable():
        return presented
    return uuid.uuid4().hex


def _peer_host(peer: str) -> str:
    """'ipv4:127.0.0.1:5000' / 'ipv6:[::1]:5000' (or '%5B::1%5D') -> '127.0.0.1' / '::1': the
    client's address as HTTP names it, so one client has one rate-limit bucket whichever
    protocol it uses (ports change per connection)."""
    kind, _, address = unquote(peer).partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer  # e.g. 'unix:/path': no port to strip
    return address.rpartition(":")[0].strip("[]") or address


def _observe(api: str, protocol: str, status: str, started: float) -> None:
    metrics = get_metrics()
    metrics.requests.labels(api, protocol, status).inc()
    metrics.latency.labels(api, protocol).observe(time.perf_counter() - started)


def _counted(api: str, denial: Denial) -> str:
    """Counts a gRPC refusal; the status name of the abort that follows."""
    record_error(api, denial.kind)
    return GRPC_CODES[denial.status].name


def _not_ready(api: str, state: ModelState) -> Denial | None:
    """The refusal of a call to `api` while no model is loaded (none for the exempt APIs)."""
    if api in READINESS_EXEMPT or state.ready:
        return None
    return Denial(503, "not_ready", f"model not loaded: {state.error}")


class HttpGate:
    """Pure ASGI middleware (no per-request task or body copy, unlike BaseHTTPMiddleware)."""

    def __init__(
        self, app: Any, guard: Guard, state: ModelState, max_body_bytes: int, routes: Mapping[str, str]
    ) -> None:
        """`routes`: API name by path, of every API the service declares."""
        set_protocol("http")
        self.app, self.guard, self.state, self.max_body_bytes = app, guard, state, max_body_bytes
        self.routes = dict(routes)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == "/readyz" and not self.state.ready:
            await self._reply(send, 503, {"ready": False, "reason": self.state.error}, [])
            return
        api = self.routes.get(path)
        if api is None:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = _request_id(headers.get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1"))
        token = REQUEST_ID.set(request_id)
        started, status = time.perf_counter(), 500
        echo = [(REQUEST_ID_HEADER.encode(), request_id.encode("latin-1", "replace"))]
        try:
            key = headers.get(b"x-api-key")
            client = (scope.get("client") or ("unknown", 0))[0]
            denial = await self.guard.admit(key.decode("latin-1") if key is not None else None, client)
            if denial is None and int(headers.get(b"content-length", b"0") or 0) > self.max_body_bytes:
                denial = Denial(413, "too_large", f"request body over {self.max_body_bytes} bytes")
            # BentoML sends 5xx bodies empty; say why here (and skip parsing).
            denial = denial or _not_ready(api, self.state) or self.guard.capacity.take()
            if denial is not None:
                status = denial.status
                record_error(api, denial.kind)
                extra = []
                if denial.retry_after_s > 0:
                    extra.append((b"retry-after", str(max(1, math.ceil(denial.retry_after_s))).encode()))
                await self._reply(send, status, {"error": denial.message, "kind": denial.kind}, echo + extra)
                return

            async def send_with_id(message: dict[str, Any]) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    message["headers"] = [*message.get("headers", []), *echo]
                await send(message)

            try:
                await self.app(scope, receive, send_with_id)
            finally:
                self.guard.capacity.release()
        except ValueError:  # a non-numeric content-length
            status = 400
            record_error(api, "bad_header")
            await self._reply(send, 400, {"error": "invalid content-length header"}, echo)
        finally:
            _observe(api, "http", str(status), started)
            REQUEST_ID.reset(token)

    @staticmethod
    async def _reply(
        send: Any, status: int, body: dict[str, object], headers: list[tuple[bytes, bytes]]
    ) -> None:
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), *headers],
            }
        )
        await send({"type": "http.response.body", "body": payload})


class GrpcGate(grpc.aio.ServerInterceptor):
    """Admission and accounting for `BentoService/Call`; model readiness for `Health/Check`."""

    def __init__(self, guard: Guard, state: ModelState, api_names: Collection[str]) -> None:
        """`api_names`: every API the service declares."""
        set_protocol("grpc")
        self.guard, self.state, self.api_names = guard, state, tuple(api_names)

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        if details.method == GRPC_HEALTH_CHECK and not self.state.ready:
            return self._not_serving()
        handler = await continuation(details)
        if handler is None or details.method != GRPC_CALL or handler.unary_unary is None:
            return handler
        metadata = {key: value for key, value in details.invocation_metadata or ()}
        # Before the message is read: a caller without the key, or arriving while the worker
        # is full, costs no receive buffer and no parse (the message may be 64 MiB).
        denial = self.guard.authenticate(metadata.get("x-api-key")) or self.guard.capacity.full()
        if denial is not None:
            return self._refuse_unread(denial, metadata, handler)
        return self._admitting(handler, metadata)

    def _admitting(self, handler: grpc.RpcMethodHandler, metadata: dict[str, Any]) -> grpc.RpcMethodHandler:
        inner = handler.unary_unary
        deserialize = handler.request_deserializer

        def lenient_deserialize(raw: bytes) -> Any:
            # A message protobuf cannot parse (e.g. nested past its recursion limit) would
            # otherwise fail inside grpc and reach the client as UNKNOWN.
            try:
                return deserialize(raw)
            except DecodeError as error:
                return Undecodable(str(error))

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            undecodable = isinstance(request, Undecodable)
            known = not undecodable and request.api_name in self.api_names
            api = request.api_name if known else UNKNOWN_API
            token, started = self._begin(metadata, context)
            status, holding = "OK", False
            try:
                denial = await self.guard.limit(_peer_host(context.peer()))
                if denial is not None:
                    status = _counted(api, denial)
                    await context.abort(GRPC_CODES[denial.status], denial.message)
                if undecodable:
                    status = grpc.StatusCode.INVALID_ARGUMENT.name
                    record_error(api, "undecodable")
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"request is not a valid bentoml.grpc.v1.Request message: {request.reason[:200]}",
                    )
                if not known:  # BentoML would answer UNKNOWN
                    status = grpc.StatusCode.INVALID_ARGUMENT.name
                    record_error(api, "unknown_api")
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"unknown api_name {request.api_name[:64]!r}; one of {list(self.api_names)}",
                    )
                # The capacity was checked before the message was read; its place is taken
                # here, where it is given back whatever happens (a call whose message never
                # arrives never runs this).
                denial = _not_ready(api, self.state) or self.guard.capacity.take()
                if denial is not None:
                    status = _counted(api, denial)
                    await context.abort(GRPC_CODES[denial.status], denial.message)
                holding = True
                return await inner(request, context)
            except BaseException:
                if status == "OK":
                    code = context.code()
                    status = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
                raise
            finally:
                if holding:
                    self.guard.capacity.release()
                _observe(api, "grpc", status, started)
                REQUEST_ID.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            call,
            request_deserializer=lenient_deserialize,
            response_serializer=handler.response_serializer,
        )

    def _refuse_unread(
        self, denial: Denial, metadata: dict[str, Any], handler: grpc.RpcMethodHandler
    ) -> grpc.RpcMethodHandler:
        """A handler that refuses the call without reading its message: request-streaming, so
        grpc runs it as soon as the call starts instead of after receiving the whole message."""

        async def refuse(_messages: Any, context: grpc.aio.ServicerContext) -> Any:
            token, started = self._begin(metadata, context)
            status = "OK"
            try:
                status = _counted(UNKNOWN_API, denial)
                await context.abort(GRPC_CODES[denial.status], denial.message)
            finally:
                _observe(UNKNOWN_API, "grpc", status, started)
                REQUEST_ID.reset(token)

        return grpc.stream_unary_rpc_method_handler(refuse, response_serializer=handler.response_serializer)

    @staticmethod
    def _begin(metadata: dict[str, Any], context: grpc.aio.ServicerContext) -> tuple[Any, float]:
        """The call's request id, set for its logs and echoed in the trailing metadata, which
        reaches the client with the status of every call, OK or not (aborts keep it). Sent
        ahead as initial metadata it cost a batch operation of its own per call: a sixth of
        the throughput of single-review calls. Returns the id's context token and the start."""
        request_id = _request_id(metadata.get(REQUEST_ID_HEADER))
        context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
        return REQUEST_ID.set(request_id), time.perf_counter()

    def _not_serving(self) -> grpc.RpcMethodHandler:
        from grpc_health.v1 import health_pb2

        reason = (self.state.error or "model not loaded").encode("ascii", "replace").decode()[:512]

        async def check(request: Any, context: grpc.aio.ServicerContext) -> Any:
            context.set_trailing_metadata((("x-not-ready-reason", reason),))
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)

        return grpc.unary_unary_rpc_method_handler(
            check,
            request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
        )
