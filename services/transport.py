"""Protocol glue: the same admission, readiness and accounting for HTTP and gRPC.

BentoML runs the API functions for both protocols, but what happens before them differs:
an ASGI middleware sees HTTP requests, a gRPC interceptor sees RPCs. Both do the same
things with the same helpers, for every API the service declares (its routes and names
are handed over from `svc.apis`, so a new API cannot skip them): give the call a request
id (echoed in the `x-request-id` response header / trailing metadata), refuse it when the
credential for its API or the caller's rate limit says so (401/UNAUTHENTICATED,
403/PERMISSION_DENIED while feedback is off, 429/RESOURCE_EXHAUSTED; BentoML would map
429 to UNAVAILABLE), when the model is not loaded (503/UNAVAILABLE, all but
`READINESS_EXEMPT`), or when the worker already has its most calls in flight
(503/UNAVAILABLE with a Retry-After), and count requests and latency per API and protocol.

Refusals cost next to nothing: HTTP refuses before the body is read; gRPC checks that the
key opens some API, and the worker's capacity, from the call's metadata, before the
message is read, and the key against the API it calls and the rate limit after it is
deserialised (the API's name is in the message). A gRPC call refused before its message
is read is counted under api "unknown".

An admitted call runs with its `Admission` in `ADMISSION` (who calls: the client's name
for the feedback it stores, and its bucket): once the API knows how many reviews the call
holds, `charge_reviews` takes the rest of its tokens, and a shortfall is refused as the
gate refuses (429 with a Retry-After / RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Collection, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, NamedTuple
from urllib.parse import unquote

import grpc
from bentoml.exceptions import BentoMLException
from google.protobuf.message import DecodeError

from services.champion import ModelState
from services.logs import REQUEST_ID
from services.metrics import get_metrics, record_error, set_protocol
from services.security import (
    API_KEY_HEADER,
    FORWARDED_FOR_HEADER,
    Caller,
    Denial,
    Guard,
    TrustedProxies,
)

READINESS_EXEMPT = ("feedback", "metadata")
"""APIs that answer without a model: metadata says why none is loaded, feedback stores
ratings. Every other API, a new one included, is refused until the model is loaded."""
UNKNOWN_API = "unknown"
REQUEST_ID_HEADER = "x-request-id"
GRPC_CALL = "/bentoml.grpc.v1.BentoService/Call"
GRPC_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
GRPC_CODES = {
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


@dataclass
class Admission:
    """An admitted call, for the API function it reaches: who calls, through which guard,
    and the refusal its review count earned (`charge_reviews`), which the gate answers."""

    guard: Guard
    caller: Caller
    denial: Denial | None = None


ADMISSION: ContextVar[Admission | None] = ContextVar("kindle_admission", default=None)


def client() -> str | None:
    """The name the current call's feedback key is configured under (None for other callers)."""
    admission = ADMISSION.get()
    return admission.caller.client if admission is not None else None


class RateLimited(BentoMLException):
    """Raised in an API function when the call's reviews exceed its bucket; the gates answer
    it as their own 429 / RESOURCE_EXHAUSTED, with the Retry-After."""

    error_code = HTTPStatus.TOO_MANY_REQUESTS


async def charge_reviews(api: str, reviews: int) -> None:
    """Charges the current call's reviews to its caller's bucket (the gate took the first
    token); raises `RateLimited` when there are not enough. Every API taking reviews calls
    it once it has parsed them; outside a gate (no admission) it does nothing."""
    admission = ADMISSION.get()
    if admission is None:
        return
    denial = await admission.guard.charge(admission.caller, reviews)
    if denial is not None:
        admission.denial = denial
        record_error(api, denial.kind)
        raise RateLimited(denial.message)


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


def _retry_after(denial: Denial) -> list[tuple[bytes, bytes]]:
    if denial.retry_after_s <= 0:
        return []
    return [(b"retry-after", str(max(1, math.ceil(denial.retry_after_s))).encode())]


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
        self,
        app: Any,
        guard: Guard,
        state: ModelState,
        max_body_bytes: int,
        routes: Mapping[str, str],
        proxies: TrustedProxies | None = None,
    ) -> None:
        """`routes`: API name by path, of every API the service declares; `proxies`: those
        whose X-Forwarded-For names the client."""
        set_protocol("http")
        self.app, self.guard, self.state, self.max_body_bytes = app, guard, state, max_body_bytes
        self.routes = dict(routes)
        self.proxies = proxies or TrustedProxies()

    def _unfit(self, api: str, headers: dict[bytes, bytes]) -> Denial | None:
        """After admission: the announced body size, the model, the worker's capacity (a place
        is taken when there is one). BentoML sends 5xx bodies empty: these say why."""
        if int(headers.get(b"content-length", b"0") or 0) > self.max_body_bytes:
            return Denial(413, "too_large", f"request body over {self.max_body_bytes} bytes")
        return _not_ready(api, self.state) or self.guard.capacity.take()

    def _address(self, scope: dict[str, Any]) -> str:
        peer = (scope.get("client") or ("unknown", 0))[0]
        if not self.proxies:
            return str(peer)
        forwarded = [v.decode("latin-1") for k, v in scope["headers"] if k == FORWARDED_FOR_HEADER.encode()]
        return self.proxies.client_address(peer, forwarded)

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
            key = headers.get(API_KEY_HEADER.encode())
            presented = key.decode("latin-1") if key is not None else None
            admitted = await self.guard.admit(api, presented, self._address(scope))
            denial = admitted if isinstance(admitted, Denial) else self._unfit(api, headers)
            if denial is not None:
                status = denial.status
                record_error(api, denial.kind)
                await self._refuse(send, denial, echo)
                return
            assert isinstance(admitted, Caller)  # a Denial is refused above
            admission = Admission(self.guard, admitted)
            replaced = False

            async def send_with_id(message: dict[str, Any]) -> None:
                nonlocal status, replaced
                if message["type"] == "http.response.start":
                    if admission.denial is not None:  # the API's reviews were over the limit
                        replaced, status = True, admission.denial.status
                        await self._refuse(send, admission.denial, echo)
                        return
                    status = message["status"]
                    message["headers"] = [*message.get("headers", []), *echo]
                elif replaced:  # BentoML's body of the refusal answered above
                    return
                await send(message)

            admitted_token = ADMISSION.set(admission)
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                ADMISSION.reset(admitted_token)
                self.guard.capacity.release()
        except ValueError:  # a non-numeric content-length
            status = 400
            record_error(api, "bad_header")
            await self._reply(send, 400, {"error": "invalid content-length header"}, echo)
        finally:
            _observe(api, "http", str(status), started)
            REQUEST_ID.reset(token)

    @classmethod
    async def _refuse(cls, send: Any, denial: Denial, headers: list[tuple[bytes, bytes]]) -> None:
        body: dict[str, object] = {"error": denial.message, "kind": denial.kind}
        await cls._reply(send, denial.status, body, headers + _retry_after(denial))

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

    def __init__(
        self,
        guard: Guard,
        state: ModelState,
        api_names: Collection[str],
        proxies: TrustedProxies | None = None,
    ) -> None:
        """`api_names`: every API the service declares; `proxies`: those whose
        `x-forwarded-for` metadata names the client."""
        set_protocol("grpc")
        self.guard, self.state, self.api_names = guard, state, tuple(api_names)
        self.proxies = proxies or TrustedProxies()

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        if details.method == GRPC_HEALTH_CHECK and not self.state.ready:
            return self._not_serving()
        handler = await continuation(details)
        if handler is None or details.method != GRPC_CALL or handler.unary_unary is None:
            return handler
        pairs = details.invocation_metadata or ()
        metadata = {key: value for key, value in pairs}
        forwarded = [value for key, value in pairs if key == FORWARDED_FOR_HEADER and isinstance(value, str)]
        # Before the message is read: a caller whose key opens no API, or arriving while the
        # worker is full, costs no receive buffer and no parse (the message may be 64 MiB).
        denial = self.guard.authenticate_any(metadata.get(API_KEY_HEADER)) or self.guard.capacity.full()
        if denial is not None:
            return self._refuse_unread(denial, metadata, handler)
        return self._admitting(handler, metadata, forwarded)

    def _admitting(
        self, handler: grpc.RpcMethodHandler, metadata: dict[str, Any], forwarded: list[str]
    ) -> grpc.RpcMethodHandler:
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
            status, holding, admitted_token = "OK", False, None
            try:
                address = self.proxies.client_address(_peer_host(context.peer()), forwarded)
                # The key against the API called; a message naming none is counted against its
                # address (its key opened some API before it was read).
                admitted = (
                    await self.guard.admit(api, metadata.get(API_KEY_HEADER), address)
                    if known
                    else await self.guard.limit(Caller(address)) or Caller(address)
                )
                if isinstance(admitted, Denial):
                    status = _counted(api, admitted)
                    await context.abort(GRPC_CODES[admitted.status], admitted.message)
                    return None  # abort raises
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
                admission = Admission(self.guard, admitted)
                admitted_token = ADMISSION.set(admission)
                return await inner(request, _RefusingContext(context, admission))
            except BaseException:
                if status == "OK":
                    code = context.code()
                    status = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
                raise
            finally:
                if admitted_token is not None:
                    ADMISSION.reset(admitted_token)
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


class _RefusingContext:
    """The call's context as BentoML's handler sees it: when the API refused the call for its
    reviews (`charge_reviews`), BentoML's abort (its 429 would be UNAVAILABLE) becomes the
    gate's own, RESOURCE_EXHAUSTED with the refusal's message; everything else is the
    context's."""

    def __init__(self, context: grpc.aio.ServicerContext, admission: Admission) -> None:
        self._context, self._admission = context, admission

    async def abort(self, code: grpc.StatusCode, details: str = "", *args: Any, **kwargs: Any) -> Any:
        denial = self._admission.denial
        if denial is not None:
            return await self._context.abort(GRPC_CODES[denial.status], denial.message)
        return await self._context.abort(code, details, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)
